"""ragkit workbench: `streamlit run app.py` (or `make up`, which starts the service beside it).

A client of the ragkit service (RAGKIT_API_URL, INTER_SERVICE_SECRET from the environment or
`.env`). Every run first looks at the service; when it is down or refuses the token, the pages
that need it show what to do instead of failing.
"""

from __future__ import annotations

import streamlit as st

from ragkit.workbench.ui import common

st.set_page_config(page_title="ragkit workbench", page_icon=":material/library_books:", layout="wide")

PAGES = {
    "Workbench": [
        st.Page("app_pages/ask.py", title="Ask", icon=":material/forum:", default=True),
        st.Page("app_pages/search.py", title="Search", icon=":material/search:"),
        st.Page("app_pages/collections.py", title="Collections", icon=":material/folder_open:"),
        st.Page("app_pages/feedback.py", title="Feedback", icon=":material/thumbs_up_down:"),
    ],
    "Operations": [
        st.Page("app_pages/health.py", title="Health", icon=":material/monitor_heart:"),
        st.Page("app_pages/evaluation.py", title="Evaluation", icon=":material/analytics:"),
    ],
}
# Health reads only the open endpoints; Evaluation reads run files from the data directory.
WITHOUT_TOKEN = {"health", "evaluation"}
WITHOUT_SERVICE = {"evaluation"}

conn = common.connection()
result = common.run_probe()
page = st.navigation(PAGES)
common.sidebar(conn, result)

try:
    if result.state == "unreachable" and page.url_path not in WITHOUT_SERVICE:
        common.service_down_page(conn, result.message)
    elif result.state == "error" and page.url_path not in WITHOUT_SERVICE:
        common.not_ragkit_page(conn, result.message)
    elif result.state == "unauthorized" and page.url_path not in WITHOUT_TOKEN:
        common.token_problem_page(conn, result.message)
    else:
        page.run()
except Exception as exc:  # noqa: BLE001 - Streamlit's rerun/stop are BaseExceptions and pass through
    common.unexpected_error(exc)
