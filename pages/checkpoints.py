import streamlit as st

st.title("Checkpoints")
st.info("Coming soon.")
