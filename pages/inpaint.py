import streamlit as st

st.title("Inpaint")
st.info("Coming soon.")
