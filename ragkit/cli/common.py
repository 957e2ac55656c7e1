"""What every client command shares: the service client and errors a person can act on."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click

from ragkit.core.errors import RagkitError, ServiceError


def client_from_environment():  # noqa: ANN201 - imported lazily: `ragkit secret` needs no httpx
    from ragkit.client import RagkitClient

    return RagkitClient()


def friendly_errors(fn: Callable) -> Callable:
    """A person gets one line saying what went wrong and what to do, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ServiceError as exc:
            hint = " (check INTER_SERVICE_SECRET in .env matches the service's)" if exc.status == 401 else ""
            click.secho(f"error {exc.status} {exc.code}: {exc.message}{hint}", fg="red", err=True)
            sys.exit(1)
        except RagkitError as exc:
            click.secho(f"error: {exc.message}", fg="red", err=True)
            sys.exit(1)

    return wrapper
