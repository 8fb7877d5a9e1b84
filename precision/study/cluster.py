"""Running a study's cells on a Dask distributed cluster (the optional extra ``precision[cluster]``).

    precision study NAME --scheduler tcp://HOST:8786     # an existing cluster
    precision study NAME --dask-workers 4                # a local cluster of 4 worker processes

    from precision.study import run_study
    from precision.study.cluster import DaskExecutor
    with DaskExecutor(scheduler="tcp://HOST:8786") as executor:
        run_study(study, out_dir, executor=executor)

How a cell travels. The client submits one task per unfinished cell, ``compute_cell(run_cell, params)``;
the cell function is pickled by reference, so each worker imports the study from its own installed
``precision`` (no checkout, no PYTHONPATH). The task returns the encoded result ("ok", tree, seconds) or
the cell's failure record, never raises for a failing cell, and only the client writes files: each cell
file is written atomically when its result arrives, as with the local executors, so the files are
byte-identical to a serial run of the same grid.

Failures.

* A cell that raises is recorded as failed, with its traceback; the others go on.
* A worker that dies in the middle of a cell (killed, out of memory, a crash in native code): the
  scheduler runs the cell again on another worker (a local cluster's nanny restarts the dead one). The
  client receives one result per cell, so nothing is lost or written twice. A cell that was on
  ``allowed-failures + 1`` workers when they died (Dask's ``distributed.scheduler.allowed-failures``,
  default 3) is recorded as failed (stage "executor", ``KilledWorker``) and the others go on.
* The client killed: the cell files written so far stay; the same command again recomputes only the
  others. A local cluster's worker processes exit with the client; a remote scheduler forgets the
  client's tasks when its connection drops.
* The scheduler lost: every unfinished cell is recorded as failed; the same command again resumes.

Threads. Each worker process computes one cell at a time (one task thread) with OMP_NUM_THREADS and the
BLAS equivalents (:data:`~precision.study.executors.THREAD_LIMIT_VARIABLES`) set to `threads_per_worker`
in its environment before it starts, i.e. before anything imports libgomp: for a local cluster through
Dask's ``distributed.nanny.pre-spawn-environ``. Remote workers are configured where they are started:
``dask worker tcp://HOST:8786 --nworkers N --nthreads 1`` (Dask's nanny sets OMP_NUM_THREADS,
MKL_NUM_THREADS and OPENBLAS_NUM_THREADS to 1 by default; the same ``pre-spawn-environ`` setting in the
workers' Dask configuration changes it). The executor checks the workers when it connects and warns if
one runs another version of precision or has no OpenMP thread limit.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .executors import THREAD_LIMIT_VARIABLES, ItemLost, check_picklable

INSTALL_HINT = 'pip install "precision[cluster]"'

# Variables Dask sets in the process of a nanny (its "pre-spawn" settings, set before it spawns a worker,
# and a marker of the parent process); a local cluster's nannies live in this process, so these are
# restored when the cluster closes.
_NANNY_VARIABLES = (*THREAD_LIMIT_VARIABLES, "MALLOC_TRIM_THRESHOLD_", "PYTHONHASHSEED", "__DASK_PARENT_PID")


class ClusterUnavailable(ImportError):
    """Dask's ``distributed`` package is not installed."""


def require_distributed() -> None:
    """Raise ClusterUnavailable, saying how to install it, when ``distributed`` cannot be imported."""
    try:
        import distributed  # noqa: F401
    except ImportError as error:
        raise ClusterUnavailable(f"running on a Dask cluster needs the 'distributed' package "
                                 f"({error}); install it with: {INSTALL_HINT}") from None


def worker_facts() -> dict:
    """What the client checks on each worker: precision's version, Python's, the thread limits."""
    from .engine import package_version

    return {"precision": package_version(), "python": platform.python_version(),
            "threads": {name: os.environ.get(name) for name in THREAD_LIMIT_VARIABLES}}


class DaskExecutor:
    """Runs cells on a Dask distributed cluster: an existing one, or a local one it starts.

    scheduler: the address of a running scheduler (``tcp://HOST:8786``); the cluster is not ours to
        configure or stop.
    workers: instead, start a local cluster of this many worker processes (one task thread each, on the
        loopback interface), stopped by :meth:`close`.
    threads_per_worker: kernel threads per local worker process (OMP_NUM_THREADS and the BLAS
        equivalents; default 1, so N workers on N cores do not oversubscribe them). Remote workers get
        theirs where they are started (see the module docstring).
    dashboard: serve a local cluster's dashboard on the loopback interface (a free port) when bokeh is
        installed; :attr:`dashboard_link` is its address, or None.
    timeout: seconds to wait for the scheduler when connecting.

    Use it as a context manager, or call :meth:`start` and :meth:`close`; :meth:`run` starts it if needed.
    """

    def __init__(self, scheduler: str | None = None, *, workers: int | None = None,
                 threads_per_worker: int = 1, dashboard: bool = True, timeout: float = 20.0):
        if (scheduler is None) == (workers is None):
            raise ValueError("give either scheduler (the address of a running Dask scheduler) or "
                             "workers (the size of a local cluster to start), not both or neither")
        if scheduler is not None and (not isinstance(scheduler, str) or not scheduler.strip()):
            raise ValueError(f"scheduler must be an address such as 'tcp://HOST:8786', got {scheduler!r}")
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                    or not 1 <= workers <= 1024):
            raise ValueError(f"workers must be an integer from 1 to 1024, got {workers!r}")
        if isinstance(threads_per_worker, bool) or not isinstance(threads_per_worker, int) \
                or not 1 <= threads_per_worker <= 256:
            raise ValueError(f"threads_per_worker must be an integer from 1 to 256, "
                             f"got {threads_per_worker!r}")
        if scheduler is not None and threads_per_worker != 1:
            raise ValueError("threads_per_worker applies to a local cluster; the workers of a running "
                             "cluster get their thread limits where they are started")
        require_distributed()
        self.scheduler = scheduler.strip() if scheduler is not None else None
        self.workers = workers
        self.threads_per_worker = threads_per_worker
        self.dashboard = dashboard
        self.timeout = timeout
        self.client = None
        self.cluster = None
        self.dashboard_link: str | None = None
        self._saved_environment: dict[str, str | None] = {}
        self._active: set[str] = set()

    def __repr__(self) -> str:
        if self.scheduler is not None:
            return f"DaskExecutor(scheduler={self.scheduler!r})"
        return f"DaskExecutor(workers={self.workers}, threads_per_worker={self.threads_per_worker})"

    # life cycle -----------------------------------------------------------------------------------
    def __enter__(self) -> "DaskExecutor":
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def start(self) -> "DaskExecutor":
        """Connect to the scheduler (or start the local cluster) and check the workers. Idempotent."""
        if self.client is not None:
            return self
        from distributed import Client

        try:
            if self.scheduler is not None:
                try:
                    self.client = Client(self.scheduler, set_as_default=False, timeout=self.timeout)
                except OSError as error:  # refused, unknown host, timed out
                    raise ConnectionError(f"cannot reach the Dask scheduler at {self.scheduler} "
                                          f"({error})") from None
            else:
                self.cluster = self._start_local_cluster()
                self.client = Client(self.cluster, set_as_default=False)
            self.dashboard_link = self._find_dashboard()
            self._check_workers()
        except BaseException:
            self.close()
            raise
        return self

    def _start_local_cluster(self):
        import dask
        from distributed import LocalCluster

        limits = {name: str(self.threads_per_worker) for name in THREAD_LIMIT_VARIABLES}
        pre_spawn = {**dask.config.get("distributed.nanny.pre-spawn-environ", default={}), **limits}
        self._saved_environment = {name: os.environ.get(name)
                                   for name in {*_NANNY_VARIABLES, *pre_spawn}}
        # The nannies read pre-spawn-environ when they are created (a variable already in this process's
        # environment wins over the configured value, hence the update) and set it in this process right
        # before each worker process is spawned (also when they restart a dead worker). The scheduler
        # serves HTTP (the dashboard, or without bokeh a page asking for it) on a free loopback port:
        # never Dask's default 8787 on every interface.
        os.environ.update(limits)
        with dask.config.set({"distributed.nanny.pre-spawn-environ": pre_spawn}):
            return LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                host="127.0.0.1", dashboard_address="127.0.0.1:0")

    def _find_dashboard(self) -> str | None:
        if self.cluster is not None and not (self.dashboard and importlib.util.find_spec("bokeh")):
            return None
        try:
            if "dashboard" not in self.client.scheduler_info().get("services", {}):
                return None
            return self.client.dashboard_link
        except Exception:
            return None

    def _check_workers(self) -> None:
        from .engine import package_version

        try:
            facts = self.client.run(worker_facts)
        except Exception as error:
            raise RuntimeError(f"the Dask workers cannot run precision ({type(error).__name__}: {error}); "
                               f"each worker needs it installed: pip install precision") from None
        ours = package_version()
        for address, fact in sorted(facts.items()):
            if fact["precision"] != ours:
                warnings.warn(f"the Dask worker {address} runs precision {fact['precision']}, this "
                              f"client {ours}: its cells may differ from a local run", stacklevel=3)
            if fact["threads"].get("OMP_NUM_THREADS") is None:
                warnings.warn(f"the Dask worker {address} has no OMP_NUM_THREADS: each of its cells "
                              "may use every core of its machine", stacklevel=3)

    @property
    def n_workers(self) -> int:
        """Workers connected now (0 before start)."""
        return len(self.client.nthreads()) if self.client is not None else 0

    def upload(self, path: Path | str) -> None:
        """Send a study script (one .py file) to the workers, which import it from there."""
        self.start()
        self.client.upload_file(str(path))

    def close(self) -> None:
        """Disconnect; stop the local cluster if this executor started it."""
        client, cluster = self.client, self.cluster
        self.client = self.cluster = None
        try:
            if client is not None:
                client.close()
            if cluster is not None:
                cluster.close()
        finally:
            for name, value in self._saved_environment.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            self._saved_environment = {}

    # running --------------------------------------------------------------------------------------
    def run(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        check_picklable(fn)  # by reference: the workers import the study themselves
        self.start()
        return self._run(fn, list(items))

    def _run(self, fn: Callable[[Any], Any], items: list) -> Iterator[tuple[int, Any]]:
        from distributed import as_completed

        if not items:
            return
        token = uuid.uuid4().hex[:12]
        keys = [f"precision-cell-{token}-{position}" for position in range(len(items))]
        futures = [self.client.submit(fn, item, key=key, pure=False)
                   for key, item in zip(keys, items)]
        position_of = {key: position for position, key in enumerate(keys)}
        self._active = set(keys)
        try:
            completed = as_completed(futures, loop=self.client.loop)
            for future in completed:
                position = position_of[future.key]
                status = future.status
                if status in ("lost", "pending"):
                    # it finished, then its worker died holding the result before it was fetched:
                    # the scheduler computes it again, so wait for it again
                    completed.add(future)
                    continue
                if status == "finished":
                    value = future.result()
                elif status == "error":  # the task itself failed: e.g. it killed too many workers
                    value = ItemLost(future.exception())
                else:
                    raise RuntimeError(f"the Dask cluster dropped cell tasks (status {status!r}): "
                                       "the scheduler was lost or restarted")
                self._active.discard(future.key)
                futures[position] = None  # let the cluster forget the result
                yield position, value
        finally:
            self._active = set()
            unfinished = [f for f in futures if f is not None and not f.done()]
            if unfinished and self.client is not None:
                try:
                    self.client.cancel(unfinished)
                except Exception:
                    pass  # the scheduler is gone: nothing left to cancel

    def running(self) -> int | None:
        """How many cells of the current run are being computed now (queued ones do not count)."""
        client, active = self.client, set(self._active)
        if client is None or not active:  # between runs: nothing of ours to count
            return None
        processing = client.processing()
        nthreads = client.nthreads()
        return sum(min(nthreads.get(worker, 1), sum(1 for key in keys if key in active))
                   for worker, keys in processing.items())


__all__ = ["DaskExecutor", "ClusterUnavailable", "require_distributed", "worker_facts", "INSTALL_HINT"]
