"""Follow-up questions made standalone before retrieval, without a language model.

"and what does --force do?" retrieves nothing useful on its own: the subject is in the turns
before it. When a question leans on the conversation (a pronoun, a leading "and"/"what about", or
too few words of its own to stand alone), the key terms of the earlier user turns — code and
quoted tokens, capitalised names, then the remaining content words, most recent turn first — are
appended to it, up to ``MAX_CARRIED_TERMS`` of them. A question that stands alone is left as it is,
so a change of subject does not drag the old one along. The rewrite is deterministic: the same
conversation always searches for the same text, and the caller is shown it (``standalone_query``).

With an LLM configured, ``Condensation`` asks it instead (``core.types.Condenser``): the recent
turns and the follow-up in, one standalone question out. Only a question that leans on the
conversation is sent (one that stands alone costs no call), and the reply is checked before it is
searched. When the model fails, is too slow, its breaker is open, or its reply is not one short
question, the deterministic rewrite above is searched instead, and the answer says so.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence

from ragkit.core.errors import DependencyError, InvalidInput, UpstreamRejected
from ragkit.core.metrics import Metrics
from ragkit.core.text import check_text
from ragkit.core.types import Condenser, Turn  # Turn lives in core.types: the Condenser port needs it

log = logging.getLogger("ragkit.conversation")

MAX_HISTORY_TURNS = 20
MAX_TURN_CHARS = 4000
MAX_CARRIED_TERMS = 8
# A question with at most this many content words of its own is taken as a follow-up.
FOLLOW_UP_CONTENT_WORDS = 3

# A standalone question says the follow-up's subject: a few words more than the follow-up, not
# a paragraph. A reply longer than this beyond the follow-up is the model talking, not asking.
MAX_CONDENSED_EXTRA_CHARS = 300
DEGRADED_REASON = "condensation_unavailable"


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


def code_tokens(text: str) -> list[str]:
    """Code and quoted tokens: options, paths, identifiers, `inline code`, "quoted text"."""
    found = [next(g for g in match.groups() if g) for match in _CODE.finditer(text)]
    return found + [next(g for g in match.groups() if g) for match in _QUOTED.finditer(text)]


def key_terms(text: str, *, with_code: bool = True) -> list[str]:
    """Code and quoted tokens (unless ``with_code`` is False), then capitalised names, then content
    words, each once, in order."""
    words = _WORD.findall(_CODE.sub(" ", text))
    # Capitalised, and not only because it starts the text: a name (Qdrant, Debian), not "How"; one
    # in capitals is a name even when it spells a common word (the assembler AS, the IT team).
    names = [
        w
        for i, w in enumerate(words)
        if (w[0].isupper() and (i or w.isupper()) and w.lower() not in _STOPWORDS) or (len(w) > 1 and w.isupper())
    ]
    # Two letters may be a whole subject: the cp, ls and df commands.
    content = [w for w in words if w.lower() not in _STOPWORDS and len(w) > 1]
    return _unique((code_tokens(text) if with_code else []) + names + content)


def leans_on_context(question: str) -> bool:
    own = [w for w in _WORD.findall(question) if w.lower() not in _STOPWORDS]
    return bool(_LEANS_ON_CONTEXT.search(question)) or len(own) <= FOLLOW_UP_CONTENT_WORDS


def follows_up(question: str, history: Sequence[Turn]) -> bool:
    """Whether the question leans on earlier user turns, so that it needs them to be searched."""
    return any(t.role == "user" for t in history) and leans_on_context(question)


def standalone_query(question: str, history: Sequence[Turn], *, to_answer: bool = False) -> str:
    """The question, with the earlier user turns' key terms appended when it leans on them.

    ``to_answer``: the version an answer is chosen by, not searched with. A follow-up naming its
    own option or identifier ("and what does --force do?") asks about it instead of the earlier
    one, so the earlier one is left out there; the search keeps it, because it is what finds the
    page both are on."""
    user_turns = [t.content for t in reversed(history) if t.role == "user"]
    if not user_turns or not leans_on_context(question):
        return question
    present = {w.lower() for w in _WORD.findall(question)}
    replaces_code = to_answer and bool(code_tokens(question))
    carried: list[str] = []
    for turn in user_turns:
        for term in key_terms(turn, with_code=not replaces_code):
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


_LABEL = re.compile(r"^(?:standalone question|rewritten question|question)\s*:\s*", re.IGNORECASE)
_WRAPPING_QUOTES = ('"', "'", "`", "“”", "‘’", "«»")


def usable_condensation(reply: str, question: str) -> tuple[str, str]:
    """The model's reply as a question to search, or "" and what is wrong with it.

    A label ("Standalone question:") or quotes around the question are taken off; anything else
    is refused rather than guessed at: nothing, several lines, far longer than a question.
    """
    text = _LABEL.sub("", reply.strip()).strip()
    for quotes in _WRAPPING_QUOTES:
        opening, closing = quotes[0], quotes[-1]
        if len(text) >= 2 and text[0] == opening and text[-1] == closing:
            text = text[1:-1].strip()
    limit = len(question.strip()) + MAX_CONDENSED_EXTRA_CHARS
    try:
        check_text(text, "the condensed question")
    except InvalidInput as exc:
        return "", f"its reply was unusable: {exc.message}"
    if not text:
        return "", "its reply was empty"
    if "\n" in text:
        return "", f"its reply ran to {len(text.splitlines())} lines, not one question"
    if len(text) > limit:
        return "", f"its reply was {len(text)} characters, far longer than a question"
    return text, ""


# (what to search, what to answer, why degraded)
Standalone = tuple[str, str, tuple[str, ...]]


class Condensation:
    """Makes a question standalone before it is searched: by the condenser (an LLM) when one is
    configured and the question leans on the history, else by the deterministic rewrite, which is
    also the fallback whenever the condenser cannot be used (see the module docstring).

    ``standalone`` returns what to search, what to answer (the same, but for the deterministic
    rewrite's ``to_answer`` version) and the reasons it is degraded (none, or one), reported and
    counted like the pipeline's other fallbacks.
    """

    def __init__(
        self, metrics: Metrics, condenser: Condenser | None = None, *, max_question_chars: int | None = None
    ) -> None:
        self.metrics = metrics
        self.condenser = condenser
        self._max_question_chars = max_question_chars

    def _worth_asking(self, question: str, history: Sequence[Turn]) -> bool:
        # A question the search will refuse (empty, over the limit) is left for it to refuse: a
        # model's shorter rewrite must not carry it past that check.
        size = len(question.strip())
        within = self._max_question_chars is None or size <= self._max_question_chars
        return size > 0 and within and follows_up(question, history)

    async def standalone(self, question: str, history: Sequence[Turn]) -> Standalone:
        if self.condenser is None or not self._worth_asking(question, history):
            return self._rewritten(question, history, ())
        started = time.perf_counter()
        try:
            condensed, problem = usable_condensation(await self.condenser.condense(history, question), question)
        except (DependencyError, UpstreamRejected) as exc:
            condensed, problem = "", exc.message
        finally:
            self.metrics.stage_latency.labels("condense").observe(time.perf_counter() - started)
        if condensed:
            return condensed, condensed, ()
        message = f"condensation unavailable ({problem}); the follow-up was rewritten without the model"
        self.metrics.degraded.labels(DEGRADED_REASON).inc()
        log.warning(json.dumps({"event": "degraded", "reason": DEGRADED_REASON, "detail": message}))
        return self._rewritten(question, history, (message,))

    @staticmethod
    def _rewritten(question: str, history: Sequence[Turn], reasons: tuple[str, ...]) -> Standalone:
        return standalone_query(question, history), standalone_query(question, history, to_answer=True), reasons
