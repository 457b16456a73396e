"""One driver per study: a lease held in the study's own storage, so it works across machines.

A driver that starts on a study writes a lease (a study user attr: a random token, who holds it,
when it expires) and keeps renewing it from a background thread; another driver that finds a lease
that has not expired refuses to start. Optuna's storages have no compare-and-set, so acquiring
is write, wait ``settle_s``, read back: when two drivers write at nearly the same time, both read
the same last write after the wait and only its writer goes on. A renewal that finds another
token stops its driver at the next step (``Lease.check``).

A driver killed without releasing its lease frees the study when the lease expires (``ttl_s``
after its last renewal), or at once when the holder was on this host and its process is gone.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from typing import Any

import optuna

from miras_search.errors import MirasError
from miras_search.study.owner import alive_elsewhere, this_driver

LEASE_ATTR = "driver_lease"
TTL_S = 60.0
"""A lease not renewed for this long is free (a driver killed on another machine)."""
RENEW_S = 10.0
SETTLE_S = 0.5
"""Wait between writing a lease and reading it back: far above the read-to-write gap of a driver."""


def _read(study: optuna.Study) -> dict[str, Any]:
    value = study._storage.get_study_user_attrs(study._study_id).get(LEASE_ATTR)
    return value if isinstance(value, dict) else {}


def _same_host_and_gone(holder: dict[str, Any]) -> bool:
    """Whether the holder ran on this host and its process no longer does (or is this one)."""
    return holder.get("host") == socket.gethostname() and not alive_elsewhere(holder)


def holder_of(study: optuna.Study, now: float | None = None) -> dict[str, Any] | None:
    """The lease of another live driver on ``study``, or None when the study is free."""
    lease = _read(study)
    if not lease or lease.get("released"):
        return None
    now = time.time() if now is None else now
    expires = lease.get("expires")
    if not isinstance(expires, int | float) or expires <= now:
        return None
    holder = lease.get("holder") or {}
    if _same_host_and_gone(holder):
        return None
    return lease


def _describe(lease: dict[str, Any], now: float) -> str:
    holder = lease.get("holder") or {}
    since = time.strftime("%H:%M:%S", time.localtime(lease.get("since", now)))
    return (f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, since {since}; its lease "
            f"expires in {max(0.0, lease['expires'] - now):.0f} s unless renewed")


class Lease:
    """A held lease; renewed in the background until ``release``."""

    def __init__(self, study: optuna.Study, ttl_s: float = TTL_S, renew_s: float = RENEW_S):
        self.study, self.ttl_s, self.renew_s = study, ttl_s, renew_s
        self.token = uuid.uuid4().hex
        self.since = time.time()
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self, **extra: Any) -> dict[str, Any]:
        return {"token": self.token, "holder": this_driver(), "since": self.since,
                "expires": time.time() + self.ttl_s, **extra}

    def _write(self, **extra: Any) -> None:
        self.study._storage.set_study_user_attr(self.study._study_id, LEASE_ATTR, self._record(**extra))

    def _renew(self) -> None:
        while not self._stop.wait(self.renew_s):
            try:
                current = _read(self.study)
                if current.get("token") != self.token:
                    holder = current.get("holder") or {}
                    self.lost = (f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')} took "
                                 "over the study's lease")
                    return
                self._write()
            except Exception:  # a storage hiccup: try again at the next renewal (ttl >> renew)
                continue

    def check(self) -> None:
        """MirasError once another driver holds the lease (this one lapsed, then was taken)."""
        if self.lost is not None:
            raise MirasError(
                f"study '{self.study.study_name}' is no longer this driver's: {self.lost} (this "
                "driver could not renew its lease in time); this driver stops and leaves the "
                "study to the other one"
            )

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.lost is None:
            try:
                if _read(self.study).get("token") == self.token:
                    self._write(released=True)
            except Exception:  # the lease then expires by itself
                pass


def refuse_if_held(study: optuna.Study, ttl_s: float = TTL_S) -> None:
    """MirasError naming the driver that holds the study's lease, if another live one does."""
    now = time.time()
    held = holder_of(study, now)
    if held is not None:
        raise MirasError(
            f"study '{study.study_name}' is being run by another driver ({_describe(held, now)}): "
            "one driver per study. Wait for it to finish, or stop it; a driver that was killed "
            f"frees the study {ttl_s:.0f} s after its last renewal (at once on the same host)"
        )


def acquire(study: optuna.Study, ttl_s: float = TTL_S, renew_s: float = RENEW_S,
            settle_s: float = SETTLE_S) -> Lease:
    """The study's lease for this driver, or MirasError naming the driver that holds it."""
    refuse_if_held(study, ttl_s)
    lease = Lease(study, ttl_s, renew_s)
    lease._write()
    time.sleep(settle_s)
    current = _read(study)
    if current.get("token") != lease.token:
        holder = current.get("holder") or {}
        raise MirasError(
            f"study '{study.study_name}' was taken by another driver that started at the same time "
            f"(host {holder.get('host', '?')}, pid {holder.get('pid', '?')}): one driver per study"
        )
    lease._thread = threading.Thread(target=lease._renew, name="miras-lease", daemon=True)
    lease._thread.start()
    return lease
