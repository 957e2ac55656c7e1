"""Helpers of the Streamlit workbench (`app.py`, `app_pages/`).

Everything here except `common` is plain Python without Streamlit, so it is unit tested
directly: connection resolution and the service probe, Prometheus text → rates and latency,
evaluation runs → comparison tables, and the small formatting rules of the pages.
"""
