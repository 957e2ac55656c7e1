"""Citations that point at no retrieved source are dropped from answers.

An answer cites its sources as ``[n]`` (or ``[n, m]``), ``n`` counting the sources from 1, so
``sources[n - 1]`` is what ``[n]`` cites. A number past the sources (``[7]`` with 3 of them, or
``[0]``) cites nothing: a model made it up, was told to by a document, or quoted a bracketed number
from a document. Left in, it reads as support the answer does not have, so it is removed, for
every generator, whole or streamed, and each removed number is counted.

What counts as a marker is deliberately narrow: digits in square brackets, at most a few of
them, comma-separated. ``[x]``, ``[]`` and ``[1.5]`` are text and are never touched, and so is a
bracketed number inside a bracket still open (``[7 [9] ]``): removing it would splice its
neighbours into a new marker (``[7 ]``) that nobody checked. So the filter never creates a
citation, and filtering its own output again drops nothing.

Spacing stays natural when a marker goes: ``fast [7].`` becomes ``fast.``, ``fast [7] [2].``
becomes ``fast [2].``, and a marker that opens a line takes the spaces after it with it.

A streamed answer is filtered as it arrives (`CitationFilter`): text is passed on at once except
a tail that may still turn out to be, or to touch, a marker (``"... [1"`` may become ``[12]``),
which waits for the next piece. The pieces joined are exactly what the whole answer filtered at
once gives (`drop_unknown_citations` is that same filter, fed once).
"""

from __future__ import annotations

import re

_NUMBER = r"\d{1,4}"
_MAX_NUMBERS = 8  # "[1, 2, 3]" is a citation; a long list of numbers in brackets is data, not one
_MARKER = re.compile(
    rf"\[[ \t]*({_NUMBER}(?:[ \t]*,[ \t]*{_NUMBER}){{0,{_MAX_NUMBERS - 1}}})[ \t]*\]"
)
# Whitespace and markers: the stretches whose spacing is rewritten when a marker in them goes.
_RUN = re.compile(rf"(?:\s+|{_MARKER.pattern})+")
# A bracket still open before a marker, with nothing but what a marker holds since: "[7 ", "[1,".
_CONTEXT_CHARS = 80
_OPEN_BRACKET = re.compile(r"\[[\d, \t]{0,64}\Z")
# The end of a piece that a later piece may complete into a marker: "[", "[1", "[1, ", "[12 ".
_OPEN_MARKER = re.compile(
    rf"\[[ \t]*(?:{_NUMBER}(?:[ \t]*,[ \t]*{_NUMBER}){{0,{_MAX_NUMBERS - 1}}}[ \t]*,?[ \t]*)?\Z"
)


def drop_unknown_citations(answer: str, sources: int) -> tuple[str, int]:
    """``answer`` without the citations of sources it was not given, and how many were dropped."""
    citations = CitationFilter(sources)
    text = citations.feed(answer) + citations.flush()
    return text, citations.dropped


class CitationFilter:
    """Drops unknown citations from an answer that arrives in pieces; see the module docstring.

    ``feed`` returns what can be passed on now (possibly ""), ``flush`` the rest once the answer
    has ended (or broken off); ``dropped`` counts the citation numbers removed so far.
    """

    def __init__(self, sources: int) -> None:
        self.sources = sources
        self.dropped = 0
        self._pending = ""
        # The end of the input already passed on: is a marker at the start of a line, or inside
        # a bracket opened before this piece?
        self._context = ""

    def feed(self, piece: str) -> str:
        self._pending += piece
        cut = _held_from(self._pending)
        ready, self._pending = self._pending[:cut], self._pending[cut:]
        return self._emit(ready)

    def flush(self) -> str:
        ready, self._pending = self._pending, ""
        return self._emit(ready)

    def _emit(self, text: str) -> str:
        if not text:
            return ""
        out: list[str] = []
        position = 0
        for run in _RUN.finditer(text):
            out.append(text[position : run.start()])
            # A marker inside a bracket still open is text, not a citation: it splits the stretch.
            stretch = run.start()
            for marker in _MARKER.finditer(text, run.start(), run.end()):
                if _OPEN_BRACKET.search(self._before(text, marker.start())):
                    out.append(self._rewrite(text[stretch : marker.start()], self._before(text, stretch)))
                    out.append(marker.group())
                    stretch = marker.end()
            out.append(self._rewrite(text[stretch : run.end()], self._before(text, stretch)))
            position = run.end()
        out.append(text[position:])
        self._context = self._before(text, len(text))
        return "".join(out)

    def _before(self, text: str, position: int) -> str:
        """The input just before ``position`` of ``text``, earlier pieces included."""
        return (self._context + text[:position])[-_CONTEXT_CHARS:]

    def _rewrite(self, stretch: str, before: str) -> str:
        """One stretch of whitespace and citation markers, with the unknown citations taken out;
        ``before`` is the input just before it."""
        # Alternating whitespace and markers: [space, marker, space, marker, ..., space].
        parts: list = []
        position = 0
        for marker in _MARKER.finditer(stretch):
            parts += [stretch[position : marker.start()], marker]
            position = marker.end()
        parts.append(stretch[position:])
        if len(parts) == 1:
            return stretch  # whitespace only

        line_start = before[-1:] in ("", "\n")
        result: list[str] = [parts[0]]  # result alternates too: [space, marker text, space, ...]
        for index in range(1, len(parts), 2):
            marker, after = parts[index], parts[index + 1]
            kept = self._kept(marker)
            if kept is not None:
                result += [kept, after]
                continue
            # The marker goes; the spaces on either side of it become one stretch.
            space_before = result.pop()
            another_marker_follows = index + 2 < len(parts)
            at_line_start = line_start and not result
            if another_marker_follows or "\n" in space_before or at_line_start:
                result.append(space_before)  # keep the next marker where it was; keep line breaks
            else:
                result.append(after)  # "fast [7]." → "fast."; "fast [7] then" → "fast then"
        return "".join(result)

    def _kept(self, marker: re.Match[str]) -> str | None:
        """The marker as it stays: unchanged, narrowed to the known numbers, or None if it goes."""
        numbers = [n.strip() for n in marker.group(1).split(",")]
        known = [n for n in numbers if 1 <= int(n) <= self.sources]
        self.dropped += len(numbers) - len(known)
        if len(known) == len(numbers):
            return marker.group()
        return f"[{', '.join(known)}]" if known else None


def _held_from(text: str) -> int:
    """Where the tail that must wait for the next piece begins (``len(text)`` if none).

    That tail is a marker that may still be completing, plus the whitespace and markers just
    before it (whether they keep their spaces depends on what comes next), so what is passed on
    always ends in a character that is neither whitespace nor part of a marker.
    """
    cut = len(text)
    bracket = text.rfind("[")
    if bracket != -1 and _OPEN_MARKER.match(text, bracket):
        cut = bracket
    last_run = None
    for run in _RUN.finditer(text, 0, cut):
        last_run = run
    if last_run is not None and last_run.end() == cut:
        cut = last_run.start()
    return cut
