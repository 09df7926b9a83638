"""GENESIS: generative models of IceCube neutrino events (diffusion transformer, normalizing flow).

The package never imports streamlit; the dashboard in app.py/views/ calls into it.
"""

__version__ = "0.1.0"
