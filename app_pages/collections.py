"""Collections: what exists, create one, upload files into it (as ingestion jobs, followed live
with their progress and failed files), browse and delete documents, delete a whole collection
(after typing its name)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from ragkit.workbench.ui import common, connection, display

UPLOAD_JOBS = "upload_jobs"  # the ids of the jobs this browser session submitted
JOBS_ACTIVE = "jobs_active"  # whether a job was under way at the last refresh
JOB_REFRESH_S = 1.0
UPLOADER_GENERATION = "uploader_generation"
PAGE_SIZE = 50

st.title("Collections")

# A message from the previous run (the page reruns after every change so all lists are fresh).
notice = st.session_state.pop("collections_notice", None)
if notice:
    st.success(notice, icon=":material/check_circle:")

collections = common.collections()
names = [c["name"] for c in collections]

if collections:
    st.dataframe(
        pd.DataFrame(display.collection_rows(collections)),
        hide_index=True,
        width="stretch",
        column_config={"vectors (MB)": st.column_config.NumberColumn(help="Dense vectors only (float32)")},
    )
else:
    st.info("No collections yet: create one below, then upload documents into it.")


def done(message: str) -> None:
    st.session_state["collections_notice"] = message
    common.refresh_collections()
    st.rerun()


create_column, upload_column = st.columns(2, gap="large")

with create_column, st.container(border=True):
    st.subheader("Create a collection")
    with st.form("create_collection", border=False):
        name = st.text_input("Name", max_chars=63, placeholder="handbook", help="Letters, digits, '_' and '-'")
        size_column, overlap_column = st.columns(2)
        chunk_size = size_column.number_input(
            "Chunk size (tokens)", min_value=None, max_value=None, value=200, step=10,
            help=f"{display.MIN_CHUNK_SIZE}-{display.MAX_CHUNK_SIZE} of the embedder's tokens "
            "(MiniLM reads at most 256)",
        )
        chunk_overlap = overlap_column.number_input(
            "Overlap (tokens)", min_value=None, max_value=None, value=30, step=5, help="Less than the chunk size"
        )
        create = st.form_submit_button("Create", type="primary", icon=":material/add:")
    if create:
        problems = display.validate_new_collection(name, chunk_size, chunk_overlap, names)
        if problems:
            for problem in problems:
                st.error(problem)
        else:
            created = common.attempt(
                common.client().create_collection, name.strip(), chunk_size=chunk_size, chunk_overlap=chunk_overlap
            )
            if created is not None:
                done(f"Created collection '{created['name']}' "
                     f"({created['embedder']}, {created['dimension']} dimensions).")


def submit_upload(target: str, files: list[Any]) -> list[str]:
    """The files as ingestion jobs (as few as the service's size limit allows): the page does not
    wait for them; the jobs section below follows them."""
    limit = connection.max_upload_mb() * 1024 * 1024
    submitted = []
    for batch in display.upload_batches([(f.name, f.getvalue()) for f in files], limit):
        job = common.attempt(common.client().submit_job, target, files=batch)
        if job is None:
            break  # the error is shown; the rest would fail the same way
        submitted.append(job["id"])
    return submitted


def cancel_job(job_id: str) -> None:
    if common.attempt(common.client().cancel_job, job_id) is not None:
        # Kept on the page after it stops, like the session's own uploads, so the outcome shows.
        st.session_state[UPLOAD_JOBS] = [*st.session_state.get(UPLOAD_JOBS, []), job_id]


def show_job(job: dict[str, Any]) -> None:
    docs = job["documents"]
    with st.container(border=True):
        st.progress(docs["done"] / max(docs["total"], 1), text=display.job_caption(job))
        if job.get("waiting"):
            st.warning(f"Waiting: {job['waiting']}", icon=":material/hourglass_top:")
        if job.get("error"):
            st.error(f"The job failed: {job['error']}", icon=":material/error:")
        if job["errors"]:
            st.dataframe(
                pd.DataFrame(job["errors"]).rename(columns={"doc_id": "document or file", "reason": "why it failed"}),
                hide_index=True, width="stretch",
            )
        if job["state"] in ("queued", "running") and not job.get("cancel_requested"):
            st.button("Cancel", key=f"cancel_{job['id']}", icon=":material/cancel:", on_click=cancel_job,
                      args=(job["id"],), help="Stops after the batch being written; what was written stays")


def active(jobs: list[dict[str, Any]]) -> bool:
    return any(job["state"] in ("queued", "running") for job in jobs)


def jobs_to_show() -> list[dict[str, Any]]:
    """Running and queued jobs, and those this browser session submitted or cancelled."""
    jobs = common.attempt(common.client().jobs, limit=20) or []
    mine = set(st.session_state.get(UPLOAD_JOBS, []))
    return [job for job in jobs if job["state"] in ("queued", "running") or job["id"] in mine]


with upload_column, st.container(border=True):
    st.subheader("Upload files")
    if not names:
        st.caption("Create a collection first.")
    else:
        target = st.selectbox("Into collection", names, key="upload_collection", persist_state="session")
        generation = st.session_state.get(UPLOADER_GENERATION, 0)
        files = st.file_uploader(
            "Text, Markdown, HTML, PDF or JSON lines",
            type=list(display.UPLOAD_TYPES),
            accept_multiple_files=True,
            max_upload_size=connection.max_upload_mb(),
            key=f"uploader_{generation}",
        )
        if st.button(
            f"Ingest {len(files)} file{'s' if len(files) != 1 else ''}" if files else "Ingest",
            type="primary", icon=":material/upload:", disabled=not files,
        ):
            submitted = submit_upload(target, files)
            if submitted:
                st.session_state[UPLOAD_JOBS] = [*st.session_state.get(UPLOAD_JOBS, []), *submitted]
                st.session_state[JOBS_ACTIVE] = True  # so the page refreshes its lists when they end
                st.session_state[UPLOADER_GENERATION] = generation + 1  # a fresh, empty uploader
                st.rerun()

shown = jobs_to_show()
if shown:
    st.subheader("Ingestion jobs")

    # Refreshed every second while a job is under way; once the last one ends, the whole page
    # reruns so the collection list and the documents show what the jobs wrote.
    @st.fragment(run_every=JOB_REFRESH_S if active(shown) else None)
    def live_jobs() -> None:
        jobs = jobs_to_show()
        for job in jobs:
            show_job(job)
        if not active(jobs) and st.session_state.get(JOBS_ACTIVE):
            st.session_state[JOBS_ACTIVE] = False
            common.refresh_collections()
            st.rerun()
        st.session_state[JOBS_ACTIVE] = active(jobs)

    live_jobs()

if names:
    st.divider()
    st.subheader("Documents")
    browse_column, page_column = st.columns([3, 1], vertical_alignment="bottom")
    browsed = browse_column.selectbox("Collection", names, key="browse_collection", persist_state="session")
    stats = next(c for c in collections if c["name"] == browsed)
    pages = max(1, -(-int(stats.get("documents", 0)) // PAGE_SIZE))
    page_number = page_column.number_input("Page", 1, pages, 1, key=f"browse_page_{browsed}")
    documents = common.attempt(
        common.client().documents, browsed, limit=PAGE_SIZE, offset=(int(page_number) - 1) * PAGE_SIZE
    )
    if documents is not None:
        if not documents:
            st.caption("No documents in this collection yet.")
        else:
            st.dataframe(
                pd.DataFrame([
                    {"document": d["doc_id"], "title": d.get("title", ""), "chunks": d.get("chunks"),
                     "metadata": d.get("metadata") or {}}
                    for d in documents
                ]),
                hide_index=True,
                width="stretch",
            )
            st.caption(f"{stats.get('documents', 0)} documents · page {page_number} of {pages}")
            doc_column, button_column = st.columns([3, 1], vertical_alignment="bottom")
            doomed = doc_column.selectbox(
                "Document to delete", [d["doc_id"] for d in documents], key=f"delete_doc_{browsed}"
            )
            if button_column.button("Delete document", icon=":material/delete:", key="delete_document"):
                removed = common.attempt(common.client().delete_document, browsed, doomed)
                if removed is not None:
                    done(f"Deleted document '{doomed}' ({removed.get('chunks', 0)} chunks) from '{browsed}'.")

    st.divider()
    with st.expander("Delete a collection", icon=":material/warning:"):
        st.markdown("This removes the collection and **every document in it**. It cannot be undone.")
        victim = st.selectbox("Collection to delete", names, key="drop_collection")
        confirmation = st.text_input(
            f"Type **{display.escape_markdown(victim)}** to confirm", key=f"drop_confirm_{victim}"
        )
        confirmed = confirmation.strip() == victim
        delete = st.button(
            "Delete collection", type="primary", icon=":material/delete_forever:", disabled=not confirmed
        )
        if delete and common.attempt(common.client().delete_collection, victim) is not None:
            done(f"Deleted collection '{victim}'.")
