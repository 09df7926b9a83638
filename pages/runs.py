import streamlit as st

st.title("Runs")
st.info("Coming soon.")
