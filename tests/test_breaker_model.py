"""The breaker state machine against a small reference model, on random sequences of calls
(hypothesis): successes, dependency failures, caller errors, and time passing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragkit.adapters.breakers import Breaker
from ragkit.core.errors import BreakerOpen, DependencyUnavailable, InvalidInput

FAIL_MAX = 3
RESET_S = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Model:
    """DESIGN.md §3 in a dozen lines: open after FAIL_MAX dependency failures in a row (a success or
    a caller's error ends the streak); refuse while open; after RESET_S one probe decides."""

    def __init__(self) -> None:
        self.state = "closed"
        self.streak = 0
        self.opened = 0.0

    def call(self, outcome: str, now: float) -> str:
        """What the caller sees: "ran" or "refused"."""
        if self.state == "open":
            if now - self.opened < RESET_S:
                return "refused"
            # The probe: its outcome closes the breaker or opens it for another full period.
            if outcome == "dependency":
                self.opened = now
            else:
                self.state, self.streak = "closed", 0
            return "ran"
        if outcome == "dependency":
            self.streak += 1
            if self.streak >= FAIL_MAX:
                self.state, self.opened = "open", now
        else:
            self.streak = 0
        return "ran"


steps = st.lists(
    st.one_of(
        st.sampled_from(["success", "dependency", "caller"]).map(lambda o: ("call", o)),
        st.floats(min_value=0.0, max_value=2 * RESET_S, allow_nan=False).map(lambda s: ("wait", s)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_the_breaker_behaves_as_the_model(sequence: list[tuple[str, object]]) -> None:
    clock = Clock()
    breaker = Breaker("model", fail_max=FAIL_MAX, reset_timeout=RESET_S, clock=clock)
    model = Model()
    for kind, value in sequence:
        if kind == "wait":
            clock.now += float(value)  # type: ignore[arg-type]
            continue
        expected = model.call(str(value), clock.now)
        ran = False
        try:
            with breaker.guard():
                ran = True
                if value == "dependency":
                    raise DependencyUnavailable("model", "down")
                if value == "caller":
                    raise InvalidInput("bad request")
        except BreakerOpen:
            assert not ran, "an open breaker must not run the call"
        except (DependencyUnavailable, InvalidInput):
            pass
        assert ("ran" if ran else "refused") == expected, (sequence, breaker.state, model.state)
        assert breaker.state == model.state, (sequence, breaker.state, model.state)


def test_the_model_itself_opens_and_recovers() -> None:
    # The reference must be able to disagree with a broken breaker: check it on a known sequence.
    model = Model()
    assert [model.call("dependency", 0.0) for _ in range(FAIL_MAX)] == ["ran"] * FAIL_MAX
    assert model.state == "open" and model.call("success", RESET_S - 0.1) == "refused"
    assert model.call("success", RESET_S) == "ran" and model.state == "closed"
    with pytest.raises(AssertionError):
        assert Model().call("dependency", 0.0) == "refused"
