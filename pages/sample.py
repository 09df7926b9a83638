import streamlit as st

st.title("Sample")
st.info("Coming soon.")
