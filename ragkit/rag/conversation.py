"""Follow-up questions made standalone before retrieval, without a language model.

"and what does --force do?" retrieves nothing useful on its own: the subject is in the turns
before it. When a question leans on the conversation (a pronoun, a leading "and"/"what about", or
too few words of its own to stand alone), the key terms of the earlier user turns — code and
quoted tokens, capitalised names, then the remaining content words, most recent turn first — are
appended to it, up to ``MAX_CARRIED_TERMS`` of them. A question that stands alone is left as it is,
so a change of subject does not drag the old one along. The rewrite is deterministic: the same
conversation always searches for the same text, and the caller is shown it (``standalone_query``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ragkit.core.errors import InvalidInput
from ragkit.core.text import check_text

MAX_HISTORY_TURNS = 20
MAX_TURN_CHARS = 4000
MAX_CARRIED_TERMS = 8
# A question with at most this many content words of its own is taken as a follow-up.
FOLLOW_UP_CONTENT_WORDS = 3

Role = Literal["user", "assistant"]


@dataclass(frozen=True)
class Turn:
    role: Role
    content: str


_CODE = re.compile(r"`([^`\n]{1,80})`|(--?[A-Za-z][\w-]*)|(\b[\w.-]+(?:/[\w.-]+)+\b)|(\b\w+(?:[._]\w+)+\b)")
_QUOTED = re.compile(r"\"([^\"\n]{1,80})\"|“([^”\n]{1,80})”")
_WORD = re.compile(r"[^\W_][\w'-]*")
_LEANS_ON_CONTEXT = re.compile(
    r"^\s*(?:and|or|but|also|so|then|what about|how about)\b"
    r"|\b(?:it|its|it's|this|that|these|those|they|them|their|there|one|ones|he|she|his|her)\b",
    re.IGNORECASE,
)
_STOPWORD_TEXT = """
    a about above after again all also am an and any are as at be been being but by can could did do
    does doing done for from get got had has have how i if in into is it its just me more most my no not
    of on once only or other our out over own same should so some such than that the their them then
    there these they this those through to too under up use used using very was we were what when where
    which while who whom why will with would you your yours please tell explain describe show give know
    want need like way ways thing things work works take make
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def check_history(history: Sequence[Turn]) -> tuple[Turn, ...]:
    """The conversation as given, or InvalidInput naming what is wrong with it."""
    if len(history) > MAX_HISTORY_TURNS:
        raise InvalidInput(f"history has {len(history)} turns; at most {MAX_HISTORY_TURNS} are kept")
    for number, turn in enumerate(history, 1):
        if turn.role not in ("user", "assistant"):
            raise InvalidInput(f"history turn {number}: role must be 'user' or 'assistant', got {turn.role!r}")
        check_text(turn.content, f"history turn {number}")
        if not turn.content.strip():
            raise InvalidInput(f"history turn {number} is empty")
        if len(turn.content) > MAX_TURN_CHARS:
            raise InvalidInput(f"history turn {number} has {len(turn.content)} characters; at most {MAX_TURN_CHARS}")
    return tuple(history)


def recent_turns(turns: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """What a client sends of a conversation it keeps: (question, answer) pairs as history turns,
    the latest ones that fit the limits, each clipped to them (an answer may be long)."""
    window = list(turns)[-(MAX_HISTORY_TURNS // 2) :]
    history = []
    for question, answer in window:
        for role, content in (("user", question), ("assistant", answer)):
            if content.strip():
                history.append({"role": role, "content": content[:MAX_TURN_CHARS]})
    return history


def key_terms(text: str) -> list[str]:
    """Code and quoted tokens, then capitalised names, then content words, each once, in order."""
    found: list[str] = []
    for match in _CODE.finditer(text):
        found.append(next(g for g in match.groups() if g))
    for match in _QUOTED.finditer(text):
        found.append(next(g for g in match.groups() if g))
    words = _WORD.findall(_CODE.sub(" ", text))
    # Capitalised, and not only because it starts the text: a name (Qdrant, Debian), not "How".
    names = [w for i, w in enumerate(words) if w[0].isupper() and (i or w.isupper()) and w.lower() not in _STOPWORDS]
    content = [w for w in words if w.lower() not in _STOPWORDS and len(w) > 2]
    return _unique(found + names + content)


def leans_on_context(question: str) -> bool:
    own = [w for w in _WORD.findall(question) if w.lower() not in _STOPWORDS]
    return bool(_LEANS_ON_CONTEXT.search(question)) or len(own) <= FOLLOW_UP_CONTENT_WORDS


def standalone_query(question: str, history: Sequence[Turn]) -> str:
    """The question, with the earlier user turns' key terms appended when it leans on them."""
    user_turns = [t.content for t in reversed(history) if t.role == "user"]
    if not user_turns or not leans_on_context(question):
        return question
    present = {w.lower() for w in _WORD.findall(question)}
    carried: list[str] = []
    for turn in user_turns:
        for term in key_terms(turn):
            if term.lower() not in present and len(carried) < MAX_CARRIED_TERMS:
                carried.append(term)
                present.add(term.lower())
    return f"{question} {' '.join(carried)}" if carried else question


def _unique(terms: list[str]) -> list[str]:
    seen: set[str] = set()
    kept = []
    for term in terms:
        if term.lower() not in seen:
            seen.add(term.lower())
            kept.append(term)
    return kept
