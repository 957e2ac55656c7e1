"""The check every adapter applies to text before sending it anywhere (a model, a server)."""

from __future__ import annotations

from ragkit.core.errors import InvalidInput


def check_text(text: object, what: str) -> None:
    """InvalidInput unless ``text`` is a str that can be sent anywhere: UTF-8 encodable."""
    if not isinstance(text, str):
        raise InvalidInput(f"{what} is {type(text).__name__}, not str")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        # A lone surrogate (Python's json accepts "\ud800"): the tokenizer refuses it and so does
        # the JSON encoder on the way to Ollama, which would report it as an outage.
        raise InvalidInput(
            f"{what} is not valid Unicode (a lone surrogate at position {exc.start}); send UTF-8 text"
        ) from exc
