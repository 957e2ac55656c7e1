"""FastAPI dependencies every route uses: the services of this app, and the gate by scope."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request

from ragkit.http.auth import Principal
from ragkit.services import Services


def services_of(request: Request) -> Services:
    return request.app.state.services


def require(scope: str) -> Any:
    """A dependency that admits the caller through the gate with ``scope`` (read, write, admin)."""

    async def dependency(request: Request) -> Principal:
        return await request.app.state.gate.admit(request, scope)

    return Depends(dependency)
