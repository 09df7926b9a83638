"""GENESIS dashboard: `streamlit run app.py`. Works on a fresh clone with no configuration."""

import streamlit as st

st.set_page_config(page_title="GENESIS", page_icon=":material/blur_on:", layout="wide")

pages = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/data.py", title="Data", icon=":material/database:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/runs.py", title="Runs", icon=":material/compare:"),
    st.Page("pages/checkpoints.py", title="Checkpoints", icon=":material/inventory_2:"),
    st.Page("pages/sample.py", title="Sample", icon=":material/scatter_plot:"),
    st.Page("pages/inpaint.py", title="Inpaint", icon=":material/healing:"),
]
st.navigation(pages).run()
