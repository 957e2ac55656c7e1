"""Ask: a chat over one collection. Answers stream in, cite their passages as [n], and can be
rated; the conversation lives in this browser session and is sent with each question, so a
follow-up is searched with what it refers to (shown under the answer when it was rewritten).

Answers and passages are shown as text, never as markup: they quote documents, and a document's
HTML or remote image rendered here would run or load in the reader's browser."""

from __future__ import annotations

import json
import uuid
from typing import Any

import streamlit as st

from ragkit.core.errors import RagkitError, ServiceUnreachable
from ragkit.core.types import DEFAULT_MODE
from ragkit.rag.conversation import recent_turns
from ragkit.workbench.ui import common, display

CHAT_KEY = "chat_turns"

st.title("Ask")
names = common.collection_names()
if not names:
    st.info("There is no collection yet. Create one and upload documents on the Collections page.")
    st.page_link("app_pages/collections.py", label="Go to Collections", icon=":material/folder_open:")
    st.stop()

turns: list[dict[str, Any]] = st.session_state.setdefault(CHAT_KEY, [])
conversation_id: str = st.session_state.setdefault("conversation_id", uuid.uuid4().hex)

left, middle, right, end = st.columns([3, 3, 3, 1.5], vertical_alignment="bottom")
collection = left.selectbox("Collection", names, key="ask_collection", persist_state="session")
mode = (
    middle.segmented_control(
        "Search mode", display.MODES, default=DEFAULT_MODE, key="ask_mode", required=True, persist_state="session"
    )
    or DEFAULT_MODE
)
top_k = right.slider("Passages to retrieve", 1, 20, 5, key="ask_top_k", persist_state="session")
if end.button(
    "New conversation",
    icon=":material/add_comment:",
    help="Forget this conversation: the next question is asked on its own",
    disabled=not turns,
):
    turns.clear()
    st.session_state["conversation_id"] = uuid.uuid4().hex
    st.rerun()


def find_turn(turn_id: str) -> dict[str, Any] | None:
    return next((t for t in turns if t["id"] == turn_id), None)


def send_feedback(turn_id: str) -> None:
    """Callback of a turn's thumbs: store the vote through the service (never raises)."""
    turn = find_turn(turn_id)
    value = st.session_state.get(f"thumbs_{turn_id}")
    if turn is None or value is None:
        return
    rating = "up" if value == 1 else "down"
    try:
        common.client().feedback(
            turn["question"],
            turn["answer"],
            rating,
            collection=turn["collection"],
            mode=turn["mode"],
            generator=turn.get("generator"),
            degraded=bool(turn.get("degraded")),
            reasons=turn.get("reasons") or [],
            sources=turn.get("sources") or [],
            answer_id=turn_id,
            conversation_id=conversation_id,
        )
        turn["feedback"] = {"rating": rating, "saved": True}
    except (RagkitError, json.JSONDecodeError) as exc:
        turn["feedback"] = {"rating": rating, "saved": False, "error": display.error_text(exc)}


def render_sources(turn: dict[str, Any]) -> None:
    sources = turn.get("sources") or []
    if not sources:
        return
    answer = turn.get("answer", "")
    cited = display.cited_numbers(answer)
    best = max((h.get("score") or 0 for h in sources), default=0)
    for number, hit in enumerate(sources, 1):
        with st.expander(display.source_label(number, hit, cited=number in cited, best_score=best)):
            st.caption(display.source_details(hit, number, len(sources), best_score=best), help=display.score_help(hit))
            # The passage as text (escaped Markdown), the sentences the answer cites in bold.
            st.markdown(display.passage_markdown(hit.get("text", ""), answer, number))


def render_turn(turn: dict[str, Any]) -> None:
    with st.chat_message("user"):
        st.markdown(turn["question"])
    with st.chat_message("assistant"):
        if turn.get("degraded"):
            st.warning(display.degraded_text(turn.get("reasons") or []), icon=":material/warning:")
        if turn.get("answer"):
            st.markdown(display.answer_markdown(turn["answer"]))
        if searched := display.searched_caption(turn["question"], turn.get("standalone_query")):
            st.caption(searched)
        if turn.get("error"):
            st.error(display.escape_markdown(turn["error"]), icon=":material/error:")
        elif turn.get("answer") and not turn.get("complete"):
            st.caption(":orange[Stopped before the answer was complete.]")
        render_sources(turn)
        caption = display.timings_caption(
            turn.get("timings_ms") or {}, mode_used=turn.get("mode_used"), generator=turn.get("generator")
        )
        if caption:
            st.caption(f"{turn['collection']} · {caption}")
        if turn.get("answer"):
            vote = turn.get("feedback") or {}
            st.feedback(
                "thumbs",
                key=f"thumbs_{turn['id']}",
                default={"up": 1, "down": 0}.get(vote.get("rating")),
                on_change=send_feedback,
                args=(turn["id"],),
            )
            if vote.get("saved"):
                st.caption("Thanks, your feedback is saved.")
            elif vote.get("error"):
                st.caption(f":red[Feedback not saved: {vote['error']}]")


def ask(question: str) -> None:
    """Stream one answer into the page, asked with the conversation so far (this collection's
    turns). The turn joins the history at once, so a stopped or failed answer keeps what arrived."""
    history = recent_turns([(t["question"], t["answer"]) for t in turns if t["collection"] == collection])
    turn: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "question": question,
        "collection": collection,
        "mode": mode,
        "top_k": top_k,
        "answer": "",
        "sources": [],
        "degraded": False,
        "reasons": [],
        "timings_ms": {},
        "generator": None,
        "mode_used": None,
        "error": None,
        "feedback": None,
        "complete": False,
    }
    turns.append(turn)
    with st.chat_message("user"):
        st.markdown(question)
    with st.chat_message("assistant"):
        banner = st.empty()

        def pieces():  # noqa: ANN202 - a generator of text for st.write_stream
            events = common.client().query_stream(question, collection, top_k=top_k, mode=mode, history=history)
            for event, data in events:
                if event == "sources":
                    turn["sources"] = data.get("sources") or []
                    turn["standalone_query"] = data.get("standalone_query")
                    turn["mode_used"] = data.get("mode_used")
                    turn["degraded"] = bool(data.get("degraded"))
                    turn["reasons"] = list(data.get("reasons") or [])
                elif event == "token":
                    turn["answer"] += data.get("text", "")
                    # st.write_stream renders what it is given as Markdown.
                    yield display.answer_markdown(data.get("text", ""))
                elif event == "degraded":
                    turn["degraded"], turn["reasons"] = True, list(data.get("reasons") or [])
                elif event == "done":
                    turn.update(
                        answer=data.get("answer", turn["answer"]),
                        generator=data.get("generator"),
                        degraded=bool(data.get("degraded")),
                        reasons=list(data.get("reasons") or []),
                        timings_ms=data.get("timings_ms") or {},
                        complete=True,
                    )
                elif event == "error":
                    turn["error"] = (data.get("error") or {}).get("message", "the answer broke off")
                    turn["degraded"], turn["reasons"] = True, list(data.get("reasons") or [])
                if turn["degraded"] and event in ("sources", "degraded", "error"):
                    # Say why while the answer is still streaming, not only afterwards.
                    banner.warning(display.degraded_text(turn["reasons"]), icon=":material/warning:")

        try:
            st.write_stream(pieces())
        except ServiceUnreachable as exc:
            turn["error"] = exc.message
        except (RagkitError, json.JSONDecodeError) as exc:
            turn["error"] = display.error_text(exc)


for past in turns:
    render_turn(past)

question = st.chat_input(f"Ask a question about {collection}", max_chars=4000, submit_mode="stop")
if question and question.strip():
    ask(question.strip())
    st.rerun()  # draw the finished turn from the history, with its citations and feedback
