"""optuna-dashboard on a study's storage (an optional dependency: the ``report`` extra)."""

from __future__ import annotations

from typing import Any

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


def serve(study: optuna.Study, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run optuna-dashboard in the foreground until Ctrl-C."""
    _dashboard().run_server(storage_of(study), host=host, port=port)
