"""Search: the passages a query retrieves, in one mode or side by side in all three.

Passages, titles and ids come from documents: they are shown as text (st.text, table cells, or
escaped Markdown), never as markup."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from ragkit.core.types import DEFAULT_MODE
from ragkit.workbench.ui import common, display

RESULTS_KEY = "search_results"

st.title("Search")
names = common.collection_names()
if not names:
    st.info("There is no collection yet. Create one and upload documents on the Collections page.")
    st.page_link("app_pages/collections.py", label="Go to Collections", icon=":material/folder_open:")
    st.stop()

with st.form("search_form", border=False):
    query = st.text_input("Query", key="search_query", max_chars=4000, placeholder="What are you looking for?")
    left, middle, right, end = st.columns([3, 3, 2, 2], vertical_alignment="bottom")
    collection = left.selectbox("Collection", names, key="search_collection", persist_state="session")
    mode = middle.segmented_control(
        "Mode", display.MODES, default=DEFAULT_MODE, key="search_mode", required=True, persist_state="session"
    )
    top_k = right.number_input("Results", 1, 100, 10, key="search_top_k", persist_state="session")
    compare = end.toggle(
        "Compare all modes", key="search_compare", persist_state="session",
        help="Run the query in dense, sparse and hybrid mode and show the results side by side",
    )
    submitted = st.form_submit_button("Search", type="primary", icon=":material/search:")

COLUMN_CONFIG = {
    "#": st.column_config.NumberColumn(width="small"),
    "score": st.column_config.NumberColumn(format="%.4f", width="small"),
    "chunk": st.column_config.NumberColumn(width="small"),
    "document": st.column_config.TextColumn(width="medium"),
    "preview": st.column_config.TextColumn(width="large"),
}


def run_search(text: str) -> dict[str, Any] | None:
    modes = display.MODES if compare else (mode or DEFAULT_MODE,)
    results: dict[str, Any] = {"query": text, "collection": collection, "modes": {}}
    for each in modes:
        found = common.attempt(common.client().search, text, collection, top_k=int(top_k), mode=each)
        if found is None:
            return None
        results["modes"][each] = found
    return results


if submitted:
    if not query.strip():
        st.warning("Type a query first.")
    else:
        st.session_state[RESULTS_KEY] = run_search(query.strip())

results = st.session_state.get(RESULTS_KEY)


def show_result(found: dict[str, Any], *, compact: bool, note: str = "") -> None:
    timing = found.get("timings_ms", {}).get("total")
    count = len(found["results"])
    st.caption(
        f"{count} result{'' if count == 1 else 's'} · {found.get('mode_used')} search"
        + (f" · {timing:,.0f} ms" if isinstance(timing, int | float) else "")
        + (f" · {note}" if note else "")
    )
    if found.get("degraded"):
        reasons = "; ".join(display.escape_markdown(r) for r in found.get("reasons") or [])
        st.warning("**Degraded.** " + reasons, icon=":material/warning:")
    if not found["results"]:
        st.info("Nothing found.")
        return
    if compact:
        # A third of the page is too narrow for a table with a readable preview: a ranked list.
        for rank, hit in enumerate(found["results"], 1):
            st.markdown(
                f"**{rank}.** {display.escape_markdown(display.document_label(hit))} · chunk {hit.get('chunk_index')} "
                f"· `{display.score_text(hit.get('score'))}`  \n"
                f":gray[{display.escape_markdown(display.preview(str(hit.get('text', '')), 140))}]"
            )
        return
    frame = pd.DataFrame(display.results_rows(found["results"]))
    st.dataframe(frame, hide_index=True, column_config=COLUMN_CONFIG, width="stretch")


if results:
    by_mode: dict[str, Any] = results["modes"]
    query_text = display.escape_markdown(results["query"])
    st.subheader(f"“{query_text}” in {display.escape_markdown(results['collection'])}")
    if len(by_mode) > 1:
        hybrid = by_mode.get("hybrid", {}).get("results", [])
        columns = st.columns(len(by_mode))
        for column, (each, found) in zip(columns, by_mode.items(), strict=True):
            with column:
                st.markdown(f"#### {each}")
                note = "" if each == "hybrid" else f"{display.overlap(found['results'], hybrid)} also in hybrid"
                show_result(found, compact=True, note=note)
    else:
        (found,) = by_mode.values()
        show_result(found, compact=False)
        hits = found["results"]
        if hits:
            labels = [f"{n}. {display.document_label(h)} (chunk {h.get('chunk_index')})" for n, h in enumerate(hits, 1)]
            chosen = st.selectbox("Read a result in full", range(len(hits)), format_func=lambda i: labels[i])
            hit = hits[chosen]
            score = display.score_text(hit.get("score"))
            st.caption(f"document {display.code_text(hit.get('doc_id'))} · score {score}")
            st.text(hit.get("text", ""))
