"""The learner's Prometheus endpoint: prometheus_client's WSGI app on a threaded wsgiref
server (a daemon thread), behind the API token when MNEMO_API_TOKEN is set.

Why a token: the per-tag series (`mnemo_accuracy{tag=...}`, `mnemo_forgetting{tag=...}`) name
the tags, which `/v1/stats` only shows with the token. Without a token configured it stays open,
like every /v1 route.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import CollectorRegistry, make_wsgi_app

from service.tokens import bearer_token, token_matches

_UNAUTHORIZED_HEADERS = [("WWW-Authenticate", "Bearer"),
                         ("Content-Type", "text/plain; charset=utf-8")]


def require_bearer(app: WSGIApplication, token: str | None) -> WSGIApplication:
    """`app` answering 401 unless the request carries `token`; `app` itself when it is None."""
    if token is None:
        return app

    def guarded(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        given = bearer_token(environ.get("HTTP_AUTHORIZATION", ""))
        if token_matches(given, token):
            return app(environ, start_response)
        start_response("401 Unauthorized", _UNAUTHORIZED_HEADERS)
        return [b"missing bearer token\n" if given is None else b"invalid bearer token\n"]

    return guarded


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Every scrape would otherwise print a line to stderr."""


class MetricsServer(ThreadingMixIn, WSGIServer):
    """A thread per request, so a slow scraper never holds the next scrape."""

    # Request threads must not keep the learner alive at exit, nor pile up to be joined.
    daemon_threads = True

    def __init__(self, host: str, port: int) -> None:
        # The address family follows the host (an IPv6 MNEMO_HOST binds an AF_INET6 socket).
        family, _, _, _, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        self.address_family = family
        super().__init__(sockaddr, _QuietHandler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def start_metrics_server(registry: CollectorRegistry, host: str, port: int,
                         token: str | None) -> MetricsServer:
    """Serve `registry` on host:port (0: a free port) from a daemon thread; every path answers
    with the metrics, as prometheus_client's own server does. Raises OSError when the address
    cannot be bound."""
    server = MetricsServer(host, port)
    server.set_app(require_bearer(make_wsgi_app(registry), token))
    threading.Thread(target=server.serve_forever, name="learner-metrics", daemon=True).start()
    return server
