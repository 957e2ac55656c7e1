"""Properties, checked by hypothesis on generated inputs:

* chunking (`ragkit.rag.chunking`): every character of a text is in some chunk, each chunk is an
  exact slice within the size in tokens, chunks move forward, and consecutive chunks overlap as
  configured;
* the circuit breaker (`ragkit.adapters.breakers.Breaker`) follows a small reference model of
  DESIGN.md §3 through any sequence of calls, outcomes and clock steps, calls in flight included.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, initialize, invariant, precondition, rule

from ragkit.adapters.breakers import Breaker
from ragkit.adapters.embedders.local import count_wordpieces
from ragkit.core.errors import BreakerOpen, DependencyUnavailable, InvalidInput
from ragkit.core.types import Chunk, Document
from ragkit.rag.chunking import chunk_document, split_sentences

CountTokens = Callable[[str], int]

# The service's counter (no special tokens), and one that adds [CLS]/[SEP] to every input as a
# model's own tokenizer call would: chunking must keep the size with either.
COUNTERS: dict[str, CountTokens] = {
    "wordpieces": count_wordpieces,
    "with_special_tokens": lambda text: count_wordpieces(text) + 2,
}


# --------------------------------------------------------------------------- generated documents


@st.composite
def documents(draw: st.DrawFn, *, structured: bool = True, long_words: bool = True, max_words: int = 12) -> str:
    """Markdown-ish text in which every run of non-space characters (but a line marker) is its
    own, so that a chunk is found at one place only in the text: words carry a number, and the
    runs longer than a chunk (a URL, CJK without spaces), which chunking cuts anywhere, never
    repeat a piece of themselves."""
    counter = iter(range(10**6))

    def word(capital: bool) -> str:
        n = next(counter)
        if long_words and draw(st.integers(0, 30)) == 0:
            return f"w{n}" + "".join(f"/{n}x{j}" for j in range(draw(st.integers(5, 90))))
        if long_words and draw(st.integers(0, 40)) == 0:
            base = draw(st.integers(0, 19_999))
            return "".join(chr(0x4E00 + (base + j) % 20_000) for j in range(draw(st.integers(1, 300))))
        return f"W{n}" if capital else f"w{n}"

    def sentence() -> str:
        words = [word(draw(st.booleans())) for _ in range(draw(st.integers(1, max_words)))]
        return " ".join(words) + draw(st.sampled_from([".", ".", "!", "?", ";", "", "。", "..."]))

    def line() -> str:
        body = " ".join(sentence() for _ in range(draw(st.integers(1, 6))))
        if not structured:
            return body
        marker = draw(st.sampled_from(["", "", "", "# ", "## ", "- ", "* ", "1. ", "> ", "| "]))
        if marker in ("# ", "## "):
            return marker + word(True)
        return marker + body

    lines = [line() for _ in range(draw(st.integers(1, 25)))]
    separators = [draw(st.sampled_from(["\n", "\n\n", "\n\n\n", " \n", "\n \t\n"])) for _ in lines]
    lead = draw(st.sampled_from(["", " ", "\n\n", "\t"]))
    return lead + "".join(text + sep for text, sep in zip(lines, separators, strict=True))


def spans_of(text: str, chunks: list[Chunk]) -> list[tuple[int, int]]:
    """Where each chunk is in the text (every chunk must be a slice of it)."""
    for chunk in chunks:
        assert chunk.text in text, f"chunk {chunk.chunk_index} is not a slice of the text"
    # Two CJK runs may share characters by chance; such a text cannot tell where a chunk came from.
    assume(all(text.count(chunk.text) == 1 for chunk in chunks))
    return [(start := text.index(c.text), start + len(c.text)) for c in chunks]


sizes = st.integers(16, 160).flatmap(lambda size: st.tuples(st.just(size), st.integers(0, size - 1)))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=documents(), size_overlap=sizes, counter=st.sampled_from(sorted(COUNTERS)))
def test_chunks_cover_every_character_within_the_size(text: str, size_overlap: tuple[int, int], counter: str) -> None:
    chunk_size, chunk_overlap = size_overlap
    count = COUNTERS[counter]
    try:
        chunks = chunk_document(
            Document(id="d", text=text), chunk_size=chunk_size, chunk_overlap=chunk_overlap, count_tokens=count
        )
    except InvalidInput:
        assume(False)  # only a chunk_size too small for the tokenizer's fixed cost is refused
        raise
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.text and chunk.text == chunk.text.strip()
        assert count(chunk.text) <= chunk_size, (chunk.chunk_index, count(chunk.text), chunk_size)
    spans = spans_of(text, chunks)
    assert all(a[0] < b[0] and a[1] < b[1] for a, b in zip(spans, spans[1:], strict=False)), "chunks move forward"
    covered = bytearray(len(text))
    for start, end in spans:
        covered[start:end] = b"\x01" * (end - start)
    missed = [i for i, character in enumerate(text) if not character.isspace() and not covered[i]]
    assert not missed, f"characters in no chunk: {[text[i] for i in missed[:10]]} at {missed[:10]}"
    if chunk_overlap == 0:
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), "no overlap was asked for"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=documents(structured=False, long_words=False, max_words=3), size=st.integers(48, 160), data=st.data())
def test_chunks_overlap_as_configured(text: str, size: int, data: st.DataObject) -> None:
    # Plain sentences of short words: every sentence is a unit of its own and word pieces add up
    # over whitespace, so the overlap can be measured in the same tokens it is configured in.
    overlap = data.draw(st.integers(16, size // 3), label="chunk_overlap")
    count = count_wordpieces
    longest_sentence = max(count(s) for s in split_sentences(text))
    assume(longest_sentence <= overlap)
    chunks = chunk_document(Document(id="d", text=text), chunk_size=size, chunk_overlap=overlap, count_tokens=count)
    spans = spans_of(text, chunks)
    for (previous_start, previous_end), (start, _) in zip(spans, spans[1:], strict=False):
        assert previous_start < start < previous_end, "consecutive chunks share their boundary sentences"
        shared = count(text[start:previous_end])
        # Whole sentences, as close to the configured overlap as they allow: never twice as much.
        assert overlap - longest_sentence < shared < 2 * overlap, (shared, overlap, longest_sentence)


# --------------------------------------------------------------------------- the breaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Call:
    """A call in flight: the breaker's guard entered, its outcome not yet known."""

    guard: Any
    probe: bool  # the model's view: this call is the one half-open probe
    finished: bool = False


@dataclass
class Model:
    """The reference: DESIGN.md §3's breaker, as plain state."""

    fail_max: int
    reset_timeout: float
    state: str = "closed"  # "closed" or "open"; "half_open" is open with a probe in flight
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False
    history: list[str] = field(default_factory=list)

    def elapsed(self, now: float) -> float:
        assert self.opened_at is not None
        return now - self.opened_at

    def admits(self, now: float) -> str:
        """What the breaker does with a new call: "call", "probe" or "refuse"."""
        if self.state == "closed":
            return "call"
        if self.probing or self.elapsed(now) < self.reset_timeout:
            return "refuse"
        return "probe"

    def open(self, now: float) -> None:
        self.state, self.opened_at = "open", now

    def close(self) -> None:
        self.state, self.failures = "closed", 0

    def outcome(self, call: Call, failed: bool, now: float) -> None:
        if call.probe:
            self.probing = False
        if self.state == "closed":
            if not failed:
                self.failures = 0
                return
            self.failures += 1
            if self.failures >= self.fail_max:
                self.open(now)
            return
        # Open: the probe decides; so does a call let in before the breaker opened, once the reset
        # timeout is over (it is news of the dependency, as fresh as a probe's); earlier, it is moot.
        if call.probe or self.elapsed(now) >= self.reset_timeout:
            if failed:
                self.open(now)
            else:
                self.close()

    @property
    def reported(self) -> str:
        return "half_open" if self.state == "open" and self.probing else self.state


class BreakerMachine(RuleBasedStateMachine):
    calls = Bundle("calls")

    @initialize(fail_max=st.integers(1, 4), reset_timeout=st.sampled_from([1.0, 5.0, 30.0]))
    def start(self, fail_max: int, reset_timeout: float) -> None:
        self.clock = Clock()
        self.breaker = Breaker("model_checked", fail_max=fail_max, reset_timeout=reset_timeout, clock=self.clock)
        self.model = Model(fail_max=fail_max, reset_timeout=reset_timeout)

    @rule(target=calls)
    def begin(self) -> Any:
        expected = self.model.admits(self.clock.now)
        guard = self.breaker.guard()
        try:
            guard.__enter__()
        except BreakerOpen as exc:
            assert expected == "refuse", f"refused a call the model admits as {expected}"
            remaining = self.model.reset_timeout - self.model.elapsed(self.clock.now)
            assert exc.retry_after == pytest.approx(remaining if remaining > 0 else 1.0)
            return None  # nothing in flight: the rules that finish a call skip it
        assert expected != "refuse", "admitted a call the model refuses"
        if expected == "probe":
            self.model.probing = True
        return Call(guard, probe=expected == "probe")

    def _finish(self, call: Call | None, exc: BaseException | None, failed: bool, counts: bool = True) -> None:
        if call is None or call.finished:
            return
        call.finished = True
        if exc is None:
            call.guard.__exit__(None, None, None)
        else:
            with contextlib.suppress(type(exc)):
                call.guard.__exit__(type(exc), exc, exc.__traceback__)
        if counts:
            self.model.outcome(call, failed, self.clock.now)
        elif call.probe:
            self.model.probing = False

    @rule(call=consumes(calls))
    def succeed(self, call: Call | None) -> None:
        self._finish(call, None, failed=False)

    @rule(call=consumes(calls))
    def fail(self, call: Call | None) -> None:
        self._finish(call, DependencyUnavailable("dep", "down"), failed=True)

    @rule(call=consumes(calls))
    def caller_mistake(self, call: Call | None) -> None:
        # A 4xx proves the dependency answered: a success for the breaker.
        self._finish(call, InvalidInput("bad"), failed=False)

    @rule(call=consumes(calls))
    def cancelled(self, call: Call | None) -> None:
        # The caller went away: says nothing about the dependency either way.
        self._finish(call, asyncio.CancelledError(), failed=False, counts=False)

    @rule(seconds=st.sampled_from([0.5, 1.0, 4.5, 5.0, 29.5, 30.0, 31.0]))
    def wait(self, seconds: float) -> None:
        self.clock.now += seconds

    @precondition(lambda self: self.model.state == "closed")
    @invariant()
    def failures_are_counted_while_closed(self) -> None:
        assert self.breaker.fail_counter == self.model.failures

    @invariant()
    def state_is_the_models(self) -> None:
        assert self.breaker.state == self.model.reported

    @invariant()
    def retry_after_counts_down_while_open(self) -> None:
        if self.model.state == "open":
            remaining = max(self.model.reset_timeout - self.model.elapsed(self.clock.now), 0.0)
            assert self.breaker.retry_after() == pytest.approx(remaining)


TestBreakerAgainstItsModel = BreakerMachine.TestCase
TestBreakerAgainstItsModel.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
