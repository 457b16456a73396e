"""Trials on Ray: one long-lived actor per worker, one trial per actor at a time.

A local Ray instance is started unless an address is given. With GPUs in the cluster every
actor holds one GPU, or ``gpus_per_trial`` of one (a fraction lets small trials share a GPU, each
then limited to its share of the GPU's memory); otherwise the CPUs are split evenly between actors
(each trial's torch threads = its CPU share); see ``miras_search.parallel.resources``. An actor whose process dies fails its trial
("worker_died") and is replaced; the study goes on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import ray
from ray.exceptions import OutOfMemoryError, RayActorError, RayError, RaySystemError

from miras_search.errors import MirasError, first_line
from miras_search.parallel.resources import plan_actors
from miras_search.ray_env import local_start_problem, ray_start_message
from miras_search.redact import redact_text, redact_url
from miras_search.schema.plugins import load_plugins
from miras_search.study.execute import TrialTask, execute, flush_live_runs
from miras_search.study.journal_repair import take_repair_notes
from miras_search.study.pools import WorkersLost

log = logging.getLogger(__name__)
START_TIMEOUT_S = 600.0
"""How long the workers may take to start (import torch, load plugins) before the run stops. A
worker that dies is reported at once (its call returns the error); this bound only catches a
start that hangs, so it is generous: on a busy shared machine a two-node cluster's worker took
over 120 s to import torch."""
REACH_TIMEOUT_S = 10.0
"""How long the check that something answers at a cluster's address waits for a TCP connection
before ``ray.init`` joins it: a head node's port answers at once (a refused connection fails at
once too); this only bounds a host that does not answer at all (a firewall dropping packets)."""
JOIN_ATTEMPTS = 2
"""How many times ``ray.init`` tries to reach the cluster's GCS once the port answers (each try
waits about 40 s; Ray's own default, 20 tries, keeps a run silent for over 12 minutes when the
port belongs to something else). ``RAY_gcs_server_port_wait_time_s`` set by the user wins."""
_RAY_CLIENT_PORT = 10001
"""Ray Client's default port (``ray://HOST`` without one)."""
POLL_S = 2.0
"""How long one ``ray.wait`` for a trial's end blocks before the cluster's health is looked at:
``ray.wait`` alone never notices that the node under it died (it would wait forever)."""
CHECK_EVERY_S = 5.0
"""How often, while trials run, the cluster's control service (GCS) is asked which nodes are
alive (one small request on a background thread: nothing on the normal path waits for it)."""
ANSWER_S = 30.0
"""How long that question may go unanswered before the cluster counts as gone. A live GCS
answers in milliseconds, a loaded machine's in seconds; a dead one never does (Ray's client
retries it silently for minutes)."""


class TrialWorker:
    """The Ray actor body: imports torch once, keeps its storage connection between trials."""

    def __init__(self, device: str, threads: int, warm_up: Callable[[], None] | None = None,
                 per_gpu: int = 1):
        import torch

        load_plugins()  # the options of the user's modules, as the driver loaded them
        if warm_up is not None:  # e.g. W&B's start, on a background thread, before the first trial
            warm_up()
        self.device, self.threads = device, threads
        # trials on a GPU share its memory with the others on it (a fractional GPU request); on
        # CPUs they share the node's RAM: as many as its CPUs hold at this thread count
        self.concurrent = per_gpu if device == "cuda" else max(1, (os.cpu_count() or 1) // threads)
        torch.set_num_threads(threads)

    def info(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(), "device": self.device,
                "threads": self.threads}

    def run(self, task: TrialTask) -> dict[str, Any]:
        result = execute(task, device=self.device, threads=self.threads, concurrent=self.concurrent,
                         limit_process=True)
        notes = take_repair_notes()  # journal damage this worker set aside: the driver says so
        return {**result, "storage_notes": notes} if notes else result

    def flush(self) -> str | None:
        """Wait for the W&B runs this worker is still writing (before it is stopped); returns
        why they could not start, if they could not."""
        return flush_live_runs()


def resolve_address(address: str | None) -> tuple[str | None, str | None]:
    """The cluster to join (None: start a local instance) and a note to show, if any.

    ``address`` (--address, parallel.address) wins; without it, ``RAY_ADDRESS`` names the cluster
    (``ray job submit`` sets it for the job's driver), as in Ray's own ``ray.init()``, except a
    dashboard URL (http://HOST:8265, what the ``ray job`` commands read from it), which is no
    cluster address: a local instance is started, and the note says so."""
    if address:
        return address, None
    found = os.environ.get("RAY_ADDRESS", "").strip()
    if not found or found == "local":
        return None, None
    if found.startswith(("http://", "https://")):
        return None, (f"RAY_ADDRESS ({redact_url(found)}) is a Ray dashboard address (for `ray job "
                      "submit`), not a cluster's: starting a local Ray instance; pass --address "
                      "HOST:6379 (or set parallel.address) to join the cluster")
    return found, (f"joining the Ray cluster at {redact_url(found)}, named by RAY_ADDRESS (unset it, "
                   "or set it to 'local', to start a local Ray instance instead)")


class _TokenAuthNotice(logging.Filter):
    """Drops Ray's notice that a new local instance uses token authentication (Ray >= 2.5x says
    so on every start, one more line in every `miras run`); the authentication stays on, and a
    notice that it is off still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


_TOKEN_NOTICE_FILTER = _TokenAuthNotice()


def connect(address: str | None, workers: int) -> bool:
    """Join ``address`` or start a local instance; True when this call started Ray."""
    if ray.is_initialized():
        return False
    token_logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if _TOKEN_NOTICE_FILTER not in token_logger.filters:
        token_logger.addFilter(_TOKEN_NOTICE_FILTER)
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "logging_level": logging.WARNING, "configure_logging": False}
    if address:
        check_cluster_answers(address)
    else:  # a deep TMPDIR, a HOME that cannot be made: Ray's own failure is a raw traceback
        problem = local_start_problem()
        if problem is not None:
            raise MirasError(problem)
    try:
        if address:
            with _bounded_join_attempts():
                ray.init(address=address, **kwargs)
        else:
            ray.init(address="local", num_cpus=max(os.cpu_count() or 1, workers),
                     **_object_store_within_limit(), **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = f"the Ray cluster at '{redact_url(address)}'" if address else "a local Ray instance"
        hint = _join_hint(str(error)) if address else ""
        raise MirasError(redact_text(f"could not start or join {where}: {error}{hint}")) from None
    except OSError as error:  # what the check above could not foresee (a read-only ~/.ray)
        message = None if address else ray_start_message(error)
        if message is None:
            raise
        raise MirasError(message) from None
    return True


def check_cluster_answers(address: str) -> None:
    """MirasError, within about ``REACH_TIMEOUT_S``, when ``address`` holds a user or password
    (Ray's addresses take none: Ray would print it back) or nothing accepts a TCP connection at
    the host and port Ray would join. Without this check ``ray.init`` retries a dead address for
    over 12 minutes, printing only Ray's own warnings. An address whose host and port cannot be
    worked out here (``auto`` with no cluster, a malformed one) is left to ``ray.init``'s error."""
    if "@" in address:
        raise MirasError(
            f"the Ray cluster address '{redact_url(address)}' (--address, parallel.address or "
            "RAY_ADDRESS) holds a user or password before '@', which Ray's addresses never do: "
            "give HOST:PORT (e.g. 10.0.0.9:6379, what `ray status` on the head node prints), "
            "'auto', or ray://HOST:10001 for Ray Client; a cluster started with token "
            "authentication takes its token from RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or "
            "~/.ray/auth_token) on this machine, not from the address"
        )
    target = _host_and_port(address)
    if target is None:
        return
    host, port = target
    try:
        with socket.create_connection((host, port), timeout=REACH_TIMEOUT_S):
            return
    except TimeoutError:
        reason = f"no answer within {REACH_TIMEOUT_S:.0f} s"
    except OSError as error:
        reason = error.strerror or str(error)
    if host not in address:  # 'auto', or localhost (which Ray joins through this machine's IP)
        reason = f"where Ray looks for it; {reason}"
    raise MirasError(
        f"could not join the Ray cluster at '{redact_url(address)}': nothing answers at "
        f"{host}:{port} ({reason}). Start the cluster's head node there first (`ray start --head` "
        "on that machine; `ray status` there prints the address to give), check the host, the "
        "port and any firewall between, or leave --address out (and parallel.address and "
        "RAY_ADDRESS unset) to run the study on a local Ray instance"
    )


def _host_and_port(address: str) -> tuple[str, int] | None:
    """The host and port that joining ``address`` connects to first: Ray Client's server for
    ``ray://HOST[:PORT]``, else the GCS address as ``ray.init`` works it out (``auto`` from the
    running cluster's file, ``localhost`` as this node's IP); None when that cannot be had."""
    if address.startswith("ray://"):
        try:
            parts = urlsplit(address)
            host, port = parts.hostname, parts.port or _RAY_CLIENT_PORT
        except ValueError:  # a port that is not a number: ray.init says so
            return None
        return (host, port) if host else None
    try:
        from ray._private.services import canonicalize_bootstrap_address

        bootstrap = canonicalize_bootstrap_address(address)
    except Exception:  # no cluster for 'auto', a malformed address, Ray's internals changed
        return None
    if not bootstrap:
        return None
    host, _, port = bootstrap.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


@contextlib.contextmanager
def _bounded_join_attempts() -> Iterator[None]:
    """``ray.init`` tries to reach a cluster's GCS ``JOIN_ATTEMPTS`` times, not Ray's default 20
    (unless ``RAY_gcs_server_port_wait_time_s`` is set already, which Ray reads as that count)."""
    name = "RAY_gcs_server_port_wait_time_s"
    if name in os.environ:
        yield
        return
    os.environ[name] = str(JOIN_ATTEMPTS)
    try:
        yield
    finally:
        os.environ.pop(name, None)


def _object_store_within_limit() -> dict[str, int]:
    """Under a virtual-memory limit (``ulimit -v``), an object store small enough to map: Ray sizes
    it from the machine's RAM (30 %), and a store larger than the limit aborts the driver in
    ``ray.init`` (``mmap failed``) before anything can be said. Trials pass little data through
    the store: a quarter of the limit is plenty."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return {}
    return {"object_store_memory": max(_MIN_OBJECT_STORE, soft // 4)}


_MIN_OBJECT_STORE = 80 * 2**20  # Ray refuses a store under 75 MiB


def check_storage_reaches_every_node(storage: str) -> None:
    """MirasError when the study's storage is a file (journal or SQLite) and the connected Ray
    cluster has more than one node: workers on the other nodes would open a file of that name on
    their own disks to report for pruning, and pruning would silently stop working. Skip this
    check only for a path on a file system that every node mounts (``shared_storage``)."""
    from miras_search.study.storage import is_url

    if is_url(storage) and not storage.startswith("sqlite:"):
        return
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) <= 1:
        return
    raise MirasError(
        f"the study's storage {redact_url(storage)} is a file on this machine, but the Ray "
        f"cluster has {len(nodes)} nodes: workers on the others would not see it (pruning would stop "
        "without a word). Use a database every node reaches (storage: "
        "postgresql+psycopg://USER@HOST/DB, see the README's \"Running on a cluster\"), or, if "
        "the path is on a file system that every node mounts, say so with `--shared-storage` "
        "(parallel.shared_storage: true in the study file)"
    )


def _join_hint(error: str) -> str:
    """What to check when joining a running cluster failed."""
    if "auth" in error.lower() or "token" in error.lower():
        return ("; the cluster asks for an authentication token: set RAY_AUTH_MODE=token (and the "
                "cluster's token, e.g. ~/.ray/auth_token) in this shell too")
    return ("; check the address (`ray status` on the head node prints it), that this machine runs "
            f"the cluster's Ray version (here {ray.__version__}), and, if the cluster was started "
            "with token authentication, set RAY_AUTH_MODE=token here too")


@contextlib.contextmanager
def _callers_signal_handlers() -> Iterator[None]:
    """Put back the Python SIGINT / SIGTERM handlers the caller had set (the study driver's
    ``CtrlC``) once Ray has started: ``ray.init`` replaces them with its own, whose SIGTERM one
    aborts with a C++ stack dump while the workers start. Default handlers are left to Ray."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kept = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in kept.items():
            if callable(handler) and handler is not signal.default_int_handler:
                signal.signal(signum, handler)


class RayPool:
    """``workers`` actors on the connected Ray cluster (see miras_search.study.pools.Pool)."""

    def __init__(self, workers: int, address: str | None = None, gpus_per_trial: float | None = None,
                 storage: str | None = None, shared_storage: bool = False,
                 warm_up: Callable[[], None] | None = None, note: Callable[[str], None] | None = None):
        self._warm_up = warm_up  # run by each worker as it starts (a picklable callable)
        address, said = resolve_address(address)
        if said is not None and not ray.is_initialized():
            (note or log.warning)(said)
        with _callers_signal_handlers():
            self._owns_ray = connect(address, workers)
        if storage is not None and not shared_storage:
            try:
                check_storage_reaches_every_node(storage)
            except MirasError:
                if self._owns_ray:
                    ray.shutdown()
                raise
        try:
            plan = plan_actors(workers, gpus_per_trial, [n["Resources"] for n in ray.nodes() if n["Alive"]])
        except MirasError:
            if self._owns_ray:
                ray.shutdown()
            raise
        self.gpus, self.threads, self.device = plan.num_gpus, plan.threads, plan.device
        self._per_gpu = plan.per_gpu
        self.capacity = workers = plan.workers
        self._actor_cls = ray.remote(TrialWorker).options(
            num_cpus=plan.num_cpus, num_gpus=plan.num_gpus, max_restarts=0,
        )
        self._health = ClusterHealth(_this_node())
        self.lost: str | None = None  # why the cluster stopped answering, once it has
        self._busy: dict[ray.ObjectRef, tuple[Any, TrialTask]] = {}
        self._in_flight = 0  # trials running as the current wait began (one may be done with)
        self._idle, self._infos = [], {}
        self.tracking_error: str | None = None  # why the workers' W&B runs did not start (shutdown)
        self._start(workers)

    def _start(self, workers: int) -> None:
        """Start ``workers`` actors and wait (at most ``START_TIMEOUT_S``) until each answers.
        Actors that died or did not answer are stopped; the pool goes on with the others, and
        when none started, Ray is let go and a MirasError says why (no trial was run yet)."""
        actors = [self._new_actor() for _ in range(workers)]
        calls = {actor.info.remote(): actor for actor in actors}
        try:
            ready, late = self._wait(list(calls), len(calls), START_TIMEOUT_S)
        except WorkersLost:
            if self._owns_ray:
                ray.shutdown()
            raise
        died = []
        for ref in ready:
            actor = calls[ref]
            try:
                self._infos[id(actor)] = ray.get(ref, timeout=START_TIMEOUT_S)
                self._idle.append(actor)
            except RayError as error:  # the actor died (RayActorError), or a late GetTimeoutError
                died.append(first_line(error))
        problems = [f"{len(died)} died as {'it' if len(died) == 1 else 'they'} started ({died[0]})"] if died else []
        if late:
            problems.append(f"{len(late)} did not answer within {START_TIMEOUT_S:.0f} s")
        started = {id(actor) for actor in self._idle}
        for actor in actors:
            if id(actor) not in started:
                with contextlib.suppress(Exception):  # already gone
                    ray.kill(actor)
        if not self._idle:
            if self._owns_ray:
                ray.shutdown()
            raise MirasError(workers_did_not_start(workers, problems))
        if problems:
            log.warning("%d of %d Ray workers did not start (%s): the study runs on %d",
                        workers - len(self._idle), workers, "; ".join(problems), len(self._idle))
        self.capacity = len(self._idle)

    def _new_actor(self):
        return self._actor_cls.remote(self.device, self.threads, self._warm_up, self._per_gpu)

    def submit(self, task: TrialTask) -> dict[str, Any]:
        if not self._idle:  # every worker died and none could be started in its place
            raise MirasError("no Ray worker is left to run trials: the workers died and none could be "
                             f"started in their place within {START_TIMEOUT_S:.0f} s (see the warnings "
                             "above); the finished trials are stored: `miras resume` the study")
        actor = self._idle.pop()
        self._busy[actor.run.remote(task)] = (actor, task)
        return self._infos.get(id(actor), {"host": "?", "pid": None, "device": self.device})

    def wait(self) -> list[tuple[TrialTask, dict[str, Any]]]:
        """The next finished trial(s); WorkersLost, within about ``CHECK_EVERY_S + ANSWER_S``
        (plus the seconds Ray takes to mark a dead node dead), when the cluster stopped answering
        or this machine's Ray node died."""
        self._in_flight = len(self._busy)
        ready, _ = self._wait(list(self._busy), 1, None)
        done = []
        for ref in ready:
            actor, task = self._busy.pop(ref)
            try:
                result = ray.get(ref)
                self._idle.append(actor)
            except RaySystemError as error:  # Ray's own: the node under the driver is gone
                self._busy[ref] = (actor, task)
                raise self._lose(f"Ray failed: {first_line(error)}") from None
            except OutOfMemoryError as error:  # Ray's memory monitor killed the worker
                result = _died(f"the node ran out of memory and Ray stopped the worker ({first_line(error)})", "oom")
                self._replace(actor)
            except RayActorError as error:
                # a worker dies with its node: then the cluster, not the trial, is what failed
                # (Ray publishes the actor's death after it marked the node dead)
                problem = self._health.check_now()
                if problem is not None:
                    self._busy[ref] = (actor, task)
                    raise self._lose(problem) from None
                kind = "oom" if _says_out_of_memory(str(error)) else "worker_died"
                result = _died(f"the worker process died while running the trial ({first_line(error)})", kind)
                self._replace(actor)
            except RayError as error:  # the actor is alive but the call failed (e.g. unpicklable)
                result = _died(f"the worker failed: {first_line(error)}", "error")
                self._idle.append(actor)
            done.append((task, result))
        return done

    def _replace(self, dead) -> None:
        """Start a worker in place of ``dead``, waiting as long as a first start may take
        (``START_TIMEOUT_S``: on a loaded machine importing torch alone took over 120 s, the bound
        this wait once had, and the pool then went on one worker short); one that does not
        answer by then is stopped, and the pool goes on without it."""
        self._infos.pop(id(dead), None)
        fresh = self._new_actor()
        try:
            ready, _ = self._wait([call := fresh.info.remote()], 1, START_TIMEOUT_S)
            if not ready:
                raise ray.exceptions.GetTimeoutError(f"no answer within {START_TIMEOUT_S:.0f} s")
            self._infos[id(fresh)] = ray.get(call)
            self._idle.append(fresh)
        except RayError as error:
            log.warning("could not replace a dead worker: %s", first_line(error))
            with contextlib.suppress(Exception):  # already gone
                ray.kill(fresh)
            self.capacity = max(1, self.capacity - 1)

    def _wait(self, refs: list[ray.ObjectRef], count: int,
              timeout: float | None) -> tuple[list[ray.ObjectRef], list[ray.ObjectRef]]:
        """``ray.wait(refs, num_returns=count, timeout=timeout)`` in slices of ``POLL_S``, the
        cluster's health looked at between them: WorkersLost when it stopped answering."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = POLL_S if deadline is None else max(0.0, min(POLL_S, deadline - time.monotonic()))
            try:
                ready, rest = ray.wait(refs, num_returns=count, timeout=left)
            except RaySystemError as error:
                raise self._lose(f"Ray failed: {first_line(error)}") from None
            if len(ready) >= count or (deadline is not None and time.monotonic() >= deadline):
                return ready, rest
            problem = self._health.problem()
            if problem is not None:
                raise self._lose(problem)

    def _lose(self, problem: str) -> WorkersLost:
        """The error that ends the run: the cluster is gone, and with it the trials in flight."""
        self.lost = problem
        running = max(len(self._busy), self._in_flight)
        trials = f"the {running} trial(s) that were running are lost" if running else "no trial was running"
        return WorkersLost(
            f"the Ray node or cluster that runs the trials stopped answering ({problem}); {trials}, "
            "every trial that had finished is stored. Check that Ray is still up (`ray status`; a "
            "node that ran out of memory, or whose Ray processes were killed, ends this way), then "
            "run the same command again: it continues the study where it stopped"
        )

    def shutdown(self) -> None:
        if self.lost is None:  # a dead cluster would keep both waiting for minutes
            with contextlib.suppress(Exception):  # live W&B runs of finished trials: let them complete
                errors = ray.get([actor.flush.remote() for actor in self._idle], timeout=120)
                self.tracking_error = next((e for e in errors if e), None)
            for actor in [*self._idle, *(a for a, _ in self._busy.values())]:
                with contextlib.suppress(Exception):  # already gone
                    ray.kill(actor)
        self._idle.clear()
        self._busy.clear()
        if self._owns_ray:
            ray.shutdown()


def _this_node() -> str | None:
    """The id of the Ray node this driver runs on; None where there is none (Ray Client, or Ray
    not started: asking the runtime context then would start, or join, a Ray instance itself)."""
    if not ray.is_initialized():
        return None
    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # Ray Client, or Ray's API changed: any live node will do
        return None


class ClusterHealth:
    """Whether the Ray cluster still runs this driver's work: its control service (GCS) answers
    ``ray.nodes()`` within ``ANSWER_S`` and lists this driver's node as alive.

    ``problem()`` never blocks: it asks on a background thread (every ``CHECK_EVERY_S``) and reads
    the answer on a later call; ``check_now()`` waits for an answer (at most ``ANSWER_S``)."""

    def __init__(self, node_id: str | None, nodes: Callable[[], list[dict[str, Any]]] | None = None):
        self.node_id = node_id
        self._nodes = nodes or ray.nodes
        self._asking: threading.Thread | None = None
        self._asked_at = 0.0
        self._answer: list[dict[str, Any]] | BaseException | None = None
        self._checked_at = time.monotonic()

    def problem(self) -> str | None:
        """Why the cluster counts as gone, from the last answer (or the lack of one); None if not."""
        now = time.monotonic()
        if self._asking is not None:
            if self._asking.is_alive():
                return self._silent() if now - self._asked_at > ANSWER_S else None
            self._asking, self._checked_at = None, now
            verdict = self._verdict(self._answer)
            if verdict is not None:
                return verdict
        if now - self._checked_at >= CHECK_EVERY_S:
            self._ask()
        return None

    def check_now(self) -> str | None:
        """``problem()``, waiting for a fresh answer (at most ``ANSWER_S``) instead of reading an old one."""
        if self._asking is None:
            self._ask()
        assert self._asking is not None
        self._asking.join(max(0.0, self._asked_at + ANSWER_S - time.monotonic()))
        if self._asking.is_alive():
            return self._silent()
        self._asking, self._checked_at = None, time.monotonic()
        return self._verdict(self._answer)

    def _ask(self) -> None:
        def ask() -> None:
            try:
                self._answer = self._nodes()
            except Exception as error:  # Ray's errors for a lost GCS vary by version
                self._answer = error

        self._answer, self._asked_at = None, time.monotonic()
        # a daemon thread: a question to a dead GCS may never return, and must not keep the process
        self._asking = threading.Thread(target=ask, name="miras-ray-health", daemon=True)
        self._asking.start()

    @staticmethod
    def _silent() -> str:
        return f"its control service (GCS) did not answer within {ANSWER_S:.0f} s"

    def _verdict(self, answer: list[dict[str, Any]] | BaseException | None) -> str | None:
        if isinstance(answer, BaseException):
            return f"asking it which nodes are alive failed: {first_line(answer, 200)}"
        alive = {node.get("NodeID") for node in answer or [] if node.get("Alive")}
        if not alive:
            return "it lists no live node"
        if self.node_id is not None and self.node_id not in alive:
            return f"Ray marked this machine's node ({self.node_id[:8]}) dead"
        return None


def workers_did_not_start(workers: int, problems: list[str]) -> str:
    """Why no Ray worker started, and what to try: most often a memory limit."""
    import resource  # Unix only, like Ray's local instance

    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    limit = (f" (this shell sets one: `ulimit -v` is {soft // 1024} KiB)"
             if soft != resource.RLIM_INFINITY else "")
    return (f"the Ray workers could not start: of {workers}, {'; '.join(problems)}. No trial was "
            "run and nothing stored was lost. The likely cause is memory: a virtual-memory limit"
            f"{limit} that a worker process (Ray, then torch) exceeds, or too little free RAM for "
            f"{workers} workers. Raise or remove the limit (`ulimit -v unlimited`), run fewer "
            "workers (--workers 1), or run the trials in this process without Ray (--inline). Ray's "
            "own account is in its logs (session_latest/logs in Ray's temp folder, /tmp/ray by default)")


def _died(reason: str, kind: str = "worker_died") -> dict[str, Any]:
    return {"status": "failed", "metrics": {}, "curve": [], "objective": None,
            "failure": kind, "reason": reason, "trial_s": 0.0}


def _says_out_of_memory(text: str) -> bool:
    """Whether Ray's account of a dead actor says its memory monitor killed it ("... killed due to
    the node running low on memory"). Not its generic note that a dead worker *may* have met the
    OOM killer: that is said of every SIGKILL."""
    return "running low on memory" in text.lower()
