"""optuna-dashboard on a study's storage (an optional dependency: the ``report`` extra)."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna

from miras_search.errors import MirasError


def _dashboard() -> Any:
    try:
        import optuna_dashboard
    except ImportError:
        raise MirasError(
            "optuna-dashboard is not installed; install it with `pip install optuna-dashboard` "
            "(or the package's `report` extra)"
        ) from None
    return optuna_dashboard


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage object an opened study reads from (Optuna keeps it on the study)."""
    return study._storage


def dashboard_app(study: optuna.Study) -> Any:
    """The dashboard's WSGI application over the study's storage (what ``serve`` runs)."""
    return _dashboard().wsgi(storage_of(study))


class _IPv6Server(WSGIServer):
    address_family = socket.AF_INET6


def bind_problem(error: OSError | OverflowError, host: str, port: int) -> str:
    """One sentence on why the dashboard cannot listen on ``host:port``, naming the option to change."""
    if isinstance(error, OverflowError) or not 0 <= port <= 65535:
        return f"--port {port}: allowed: 0 to 65535"
    if isinstance(error, socket.gaierror):
        return (f"--host {host}: unknown host ({error.strerror or error}); give an address or name of "
                "this machine, e.g. 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)")
    if error.errno == errno.EADDRINUSE:
        return f"port {port} is in use on {host}; give --port another one (or 0 for any free port)"
    if error.errno == errno.EADDRNOTAVAIL:
        return f"--host {host} is not an address of this machine; give one of its own, e.g. 127.0.0.1"
    if error.errno == errno.EACCES:
        return f"port {port} on {host} needs privileges this user lacks; give --port above 1023"
    return f"cannot listen on {host} port {port}: {error.strerror or error}; give another --host or --port"


def listen(study: optuna.Study, host: str = "127.0.0.1", port: int = 8080) -> WSGIServer:
    """A server bound to ``host:port`` with the study's dashboard (not yet serving); MirasError,
    in one sentence, when the address cannot be had (port in use, unknown host, ...)."""
    app = dashboard_app(study)
    server_class = _IPv6Server if ":" in host else WSGIServer
    try:
        return make_server(host, port, app, server_class=server_class, handler_class=WSGIRequestHandler)
    except (OSError, OverflowError) as error:
        raise MirasError(bind_problem(error, host, port)) from None


def serve(study: optuna.Study, host: str = "127.0.0.1", port: int = 8080,
          ready: Callable[[str], None] | None = None) -> None:
    """Run optuna-dashboard in the foreground until Ctrl-C; ``ready(url)`` is called once it
    listens (the URL has the actual port: ``port`` 0 picks a free one)."""
    server = listen(study, host, port)
    try:
        if ready is not None:
            shown = f"[{host}]" if ":" in host else host
            ready(f"http://{shown}:{server.server_port}/")
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
