"""HTTP routes and the ASGI pieces around them. No SQL here: only services."""

from teegate.api._answer import AnswerResponse
from teegate.api._disconnect import DisconnectWatch, LateWatches
from teegate.api._errors import on_http_exception, on_teegate_error
from teegate.api._middleware import RequestContextMiddleware, RequestIds
from teegate.api._routes import routes
from teegate.api._state import Gateway, KeyAuthenticator

__all__ = [
    "AnswerResponse",
    "DisconnectWatch",
    "Gateway",
    "KeyAuthenticator",
    "LateWatches",
    "RequestContextMiddleware",
    "RequestIds",
    "on_http_exception",
    "on_teegate_error",
    "routes",
]
