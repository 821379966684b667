"""The Latency Lab dashboard (Streamlit + plotly) and the load generator it drives."""
