"""Feedback: the thumbs given on the Ask page, as a table and as JSON or CSV to download."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from ragkit.workbench.ui import common, display

st.title("Feedback")
st.caption("Every thumbs up or down given on the Ask page, stored by the service in its data directory.")

left, right, _ = st.columns([2, 2, 4])
scope = left.selectbox("Collection", ["all collections", *common.collection_names()], key="feedback_collection")
rating = right.segmented_control(
    "Rating", ["up", "down"], key="feedback_rating",
    format_func=lambda r: ":material/thumb_up: up" if r == "up" else ":material/thumb_down: down",
)
collection = None if scope == "all collections" else scope

entries = common.attempt(common.client().feedback_export, collection=collection, rating=rating)
if entries is not None:
    if not entries:
        st.info("No feedback yet. Rate answers with the thumbs under each answer on the Ask page.")
    else:
        ups = sum(e["rating"] == "up" for e in entries)
        answers = {e.get("answer_id") or e["id"] for e in entries}
        a, b, c = st.columns(3)
        a.metric("Votes", len(entries))
        b.metric("Answers rated", len(answers))
        c.metric("Thumbs up", f"{ups / len(entries):.0%}")
        frame = pd.DataFrame([
            {
                "when": e.get("created_at"),
                "rating": e["rating"],
                "collection": e.get("collection"),
                "question": e.get("question"),
                "answer": display.preview(e.get("answer", ""), 200),
                "degraded": e.get("degraded"),
                "comment": e.get("comment", ""),
            }
            for e in reversed(entries)  # newest first on screen
        ])
        st.dataframe(frame, hide_index=True, width="stretch")
        csv_text = common.attempt(
            common.client().feedback_export, format="csv", collection=collection, rating=rating
        )
        json_column, csv_column, _ = st.columns([1, 1, 4])
        json_column.download_button(
            "Download JSON", json.dumps(entries, ensure_ascii=False, indent=1), "ragkit-feedback.json",
            mime="application/json", icon=":material/download:", on_click="ignore",
        )
        if csv_text is not None:
            csv_column.download_button(
                "Download CSV", csv_text, "ragkit-feedback.csv", mime="text/csv", icon=":material/download:",
                on_click="ignore",
            )
