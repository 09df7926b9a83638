"""Generative models: PMT diffusion transformer (dit.py) and conditional normalizing flow (flow.py)."""
