"""featapp: placeholder page until the app lands."""

import streamlit as st

st.title("featapp")
st.write("Look inside a small convnet, layer by layer. The pages are being built.")
