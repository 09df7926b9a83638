"""GENESIS dashboard: `streamlit run app.py`. Works on a fresh clone with no configuration."""

import streamlit as st

st.set_page_config(page_title="GENESIS", page_icon=":material/blur_on:", layout="wide")

pages = [
    st.Page("views/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("views/data.py", title="Data", icon=":material/database:"),
    st.Page("views/train.py", title="Train", icon=":material/model_training:"),
    st.Page("views/runs.py", title="Runs", icon=":material/compare:"),
    st.Page("views/checkpoints.py", title="Checkpoints", icon=":material/inventory_2:"),
    st.Page("views/sample.py", title="Sample", icon=":material/scatter_plot:"),
    st.Page("views/inpaint.py", title="Inpaint", icon=":material/healing:"),
]
st.navigation(pages).run()
