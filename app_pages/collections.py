"""Collections: what exists, create one, upload files into it, browse and delete documents,
delete a whole collection (after typing its name)."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import streamlit as st

from ragkit.core.errors import RagkitError, ServiceError
from ragkit.workbench.ui import common, connection, display

UPLOAD_RESULTS = "upload_results"
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


def upload_files(target: str, files: list[Any]) -> list[dict[str, Any]]:
    """One request per file, so the progress bar moves and one bad file does not sink the rest."""
    rows = []
    progress = st.progress(0.0, text="Starting…")
    for index, upload in enumerate(files):
        progress.progress(index / len(files), text=f"Ingesting {upload.name} ({index + 1} of {len(files)})")
        try:
            response = common.client().upload(target, [(upload.name, upload.getvalue())])
            rows.append(display.upload_row(upload.name, display.file_result_from(response, upload.name)))
        except ServiceError as exc:
            # A file that could not be read comes back as a 422 listing it: show the file's reason.
            per_file = exc.details.get("files") if isinstance(exc.details.get("files"), list) else []
            reason = per_file[0].get("error") if per_file and isinstance(per_file[0], dict) else None
            rows.append(display.upload_row(upload.name, None, reason or display.error_text(exc)))
            if exc.status in (401, 404, 503, 504):
                break  # the rest would fail the same way
        except (RagkitError, json.JSONDecodeError) as exc:
            rows.append(display.upload_row(upload.name, None, display.error_text(exc)))
            break
    progress.progress(1.0, text=f"Done: {len(rows)} of {len(files)} files")
    return rows


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
            st.session_state[UPLOAD_RESULTS] = {"collection": target, "rows": upload_files(target, files)}
            st.session_state[UPLOADER_GENERATION] = generation + 1  # a fresh, empty uploader
            common.refresh_collections()
            st.rerun()
        outcome = st.session_state.get(UPLOAD_RESULTS)
        if outcome:
            rows = outcome["rows"]
            failed = sum(r["result"] == "failed" for r in rows)
            summary = f"{len(rows) - failed} of {len(rows)} files went into '{outcome['collection']}'"
            (st.warning if failed else st.success)(summary + (f"; {failed} failed." if failed else "."))
            st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

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
