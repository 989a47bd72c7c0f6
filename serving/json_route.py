"""Every route reads JSON bodies under the API's number policy (``schemas.edge``):
NaN, Infinity and over-long numbers are malformed JSON (a 422 ``json_invalid`` that
says why), fractions are exact decimals.  Python's own reader takes ``NaN``, and the
validation error that echoed it back could not be serialised (a 500).

FastAPI's documented way to change how a request is read: a route class whose handler
gets a request subclass.  Every router is built with :func:`api_router`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute

from schemas.edge import loads_json


class EdgeRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads_json(await self.body())
        return self._json


class EdgeRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def edge_handler(request: Request) -> Response:
            return await handler(EdgeRequest(request.scope, request.receive))

        return edge_handler


def api_router(**kwargs: Any) -> APIRouter:
    return APIRouter(route_class=EdgeRoute, **kwargs)
