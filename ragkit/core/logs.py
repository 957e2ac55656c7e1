"""Logging set-up for the service process: readable on the console, kept under data/logs, and
never a secret in any line.

A caller may put its token in the URL (``?token=…``, or the service secret anywhere in the query
string or the path), and uvicorn's access log writes the URL as it came. `Redactor` rewrites a
line before it is written: every known secret however a URL spells it (each character as
itself or percent-encoded), the values of query parameters whose names say they are
credentials, bearer tokens, and anything shaped like a JWT. `RedactingFilter` applies it to the
records of a handler; `configure_logging` puts it on ragkit's handlers and
`redacting_log_config` on uvicorn's (its access and error logs). Filtering at the handlers
covers every record they write, whichever logger it came from.

Each line ragkit writes is one JSON object (`JsonFormatter`) carrying the id of the request it
was logged for (`RequestIdFilter`, from `ragkit.core.context`), so one request's lines can be
pulled out of an interleaved log with that id, the one its caller got in `X-Request-ID`.
"""

from __future__ import annotations

import copy
import json
import logging
import logging.handlers
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ragkit.core.config import Settings
from ragkit.core.context import current_request_id

REDACTED = "[redacted]"
LOG_FILE_BYTES = 10 * 1024 * 1024  # ragkit.log is rotated at this size, keeping LOG_FILE_BACKUPS
LOG_FILE_BACKUPS = 3

# Query parameters whose value is a credential, whatever it is: redacted even when unknown.
_SECRET_PARAMS = (
    "token",
    "access_token",
    "id_token",
    "refresh_token",
    "service_token",
    "x-service-token",
    "x_service_token",
    "jwt",
    "auth",
    "authorization",
    "bearer",
    "key",
    "api_key",
    "api-key",
    "apikey",
    "secret",
    "client_secret",
    "password",
    "passwd",
    "signature",
)
_PARAM = re.compile(
    r"(?P<name>(?:^|(?<=[?&;\s]))(?:" + "|".join(re.escape(n) for n in _SECRET_PARAMS) + r")=)[^&;#\s\"']*",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<name>\bbearer\s+)[^\s,;\"']+", re.IGNORECASE)
# Three base64url segments, the first two JSON objects ("eyJ" is '{"' encoded): a JWT, signed or not.
_JWT = re.compile(r"\beyJ[\w-]{4,}\.eyJ[\w-]{4,}\.[\w-]*")


def known_secrets(settings: Settings) -> list[str]:
    """Every configured value that must never be logged."""
    found = [s.decode("utf-8", "replace") for s in settings.service_secrets]
    found += [v for v in (settings.jwt_secret, settings.qdrant_api_key, settings.openai_key) if v]
    return found


def _spelled_any_way(secret: str) -> str:
    """A pattern for ``secret`` with each character as itself or percent-encoded (either case).

    A URL may carry any mix: httpx encodes ``/`` in a query value, uvicorn's access log re-encodes
    the decoded path, Starlette's URL encodes only ``?`` in it. Listing forms misses mixes;
    spelling each character both ways does not.
    """
    parts = []
    for char in secret:
        encoded = "".join(
            "%" + "".join(f"[{h}{h.lower()}]" if h.isalpha() else h for h in f"{byte:02X}")
            for byte in char.encode("utf-8")
        )
        plus = r"|\+" if char == " " else ""  # a space in a query string may be written +
        parts.append(f"(?:{re.escape(char)}|{encoded}{plus})")
    return "".join(parts)


class Redactor:
    """``text -> text`` with every secret it knows of, and every credential it recognises, replaced."""

    def __init__(self, secrets: Iterable[str | bytes] = ()) -> None:
        known: set[str] = set()
        for secret in secrets:
            text = secret.decode("utf-8", "replace") if isinstance(secret, bytes) else str(secret)
            if len(text) >= 8:  # a short value would redact ordinary words; secrets are >= 32 bytes
                known.add(text)
        # Longest first, so a secret that contains another is replaced whole.
        ordered = sorted(known, key=len, reverse=True)
        self._known = re.compile("|".join(_spelled_any_way(k) for k in ordered)) if ordered else None

    def __call__(self, text: str) -> str:
        if self._known is not None:
            text = self._known.sub(REDACTED, text)
        text = _PARAM.sub(lambda m: m.group("name") + REDACTED, text)
        text = _BEARER.sub(lambda m: m.group("name") + REDACTED, text)
        return _JWT.sub(REDACTED, text)


class RedactingFilter(logging.Filter):
    """Redacts a record's message and its arguments in place (never drops a record).

    The arguments are redacted one by one rather than replaced by the formatted message, since
    some formatters read them (uvicorn's access formatter unpacks the request line from them).
    """

    def __init__(self, secrets: Iterable[str | bytes] = (), redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redact = redactor or Redactor(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = self.redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self.redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: self.redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


class RequestIdFilter(logging.Filter):
    """Stamps each record with the id of the request it was logged for (``request_id``, None
    outside a request), so every line of one request can be found by that id."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request_id()
        return True


# The attributes every LogRecord has; anything else on a record came from ``extra=`` and is logged.
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request_id"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC), ``level``, ``logger``, ``request_id`` when there
    is one, then the message's fields.

    Much of ragkit logs a JSON object as its message (``{"event": "degraded", ...}``): its keys
    become fields of the line, so a log pipeline can filter on them, rather than a string to
    parse twice. Any other message is the ``message`` field. Fields passed with ``extra=`` are
    kept; a traceback is the ``exception`` field (already redacted when a filter put it in
    ``exc_text``).
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
        }
        request_id = getattr(record, "request_id", None) or current_request_id()
        if request_id:
            entry["request_id"] = request_id
        message = record.getMessage()
        fields = _json_object(message)
        if fields is None:
            entry["message"] = message
        else:
            entry.update({key: value for key, value in fields.items() if key not in entry})
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and key not in entry:
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - stdlib name
        return datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")


def _json_object(message: str) -> dict[str, Any] | None:
    if not message.startswith("{"):
        return None
    try:
        value = json.loads(message)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def configure_logging(data_dir: Path, level: int = logging.INFO, secrets: Iterable[str | bytes] = ()) -> None:
    logs = data_dir / "logs"
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    problem: OSError | None = None
    try:
        logs.mkdir(parents=True, exist_ok=True)
        # Rotated by size: a flood of warnings (a dependency down for a day) must not fill the disk.
        handlers.append(
            logging.handlers.RotatingFileHandler(
                logs / "ragkit.log", maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_BACKUPS, encoding="utf-8"
            )
        )
    except OSError as exc:
        # A read-only or full data directory must not end the start here with a traceback: the
        # store, opened next, says what is wrong and what to do; until then the console suffices.
        problem = exc
    # JSON lines, each with the request id of the request it belongs to (RequestIdFilter).
    formatter = JsonFormatter()
    redacting = RedactingFilter(secrets)
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(redacting)
        handler.addFilter(RequestIdFilter())
    root = logging.getLogger("ragkit")
    root.setLevel(level)
    root.handlers = handlers
    if problem is not None:
        root.warning("logging to the console only: cannot write %s (%s)", logs / "ragkit.log", problem.strerror)


def redacting_log_config(base: dict[str, Any], secrets: Iterable[str | bytes]) -> dict[str, Any]:
    """A copy of a `logging.config.dictConfig` dict (uvicorn's) with redaction on every handler."""
    config = copy.deepcopy(base)
    config.setdefault("filters", {})["ragkit_redact"] = {"()": RedactingFilter, "secrets": list(secrets)}
    for handler in config.get("handlers", {}).values():
        handler["filters"] = [*handler.get("filters", []), "ragkit_redact"]
    return config
