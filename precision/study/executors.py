"""Where the cells of a study run: in this process, in local worker processes, or on a cluster.

An executor has one method, ``run(fn, items)``, which calls ``fn(item)`` for every item and yields
``(position, value)`` pairs in the order the calls *finish*. The engine writes each cell's file as soon as
its pair arrives, so the order of completion never reaches the results (they are keyed by cell id).

The engine passes a ``fn`` that never raises for a failing cell (it returns the failure as a value), so an
exception out of ``run`` means the executor itself broke (e.g. a worker process died). An executor that
can lose one item without breaking (a cluster gives up on a task that killed its workers several times)
yields ``(position, ItemLost(error))`` for it and goes on with the others.

Worker processes never outlive the run that started them: when it ends they are shut down, and when it is
killed (SIGKILL, SIGTERM) each worker notices that its parent is gone and exits.

An executor may also have a ``running()`` method: how many of its items are being computed right now (or
None when it cannot tell); the progress display shows it.

Picklability. :class:`ProcessExecutor` and cluster executors send the cell function to other processes by
reference, so it must be a top-level function of an importable module (a study of ``precision.studies``,
or a script of $PRECISION_STUDIES_DIR, whose folder is put on ``sys.path`` for the workers), not a lambda, a
nested function or a method of a local class. Its parameters and results must pickle too (plain values
and numpy arrays do). A script that runs a study itself with a ProcessExecutor must guard that call with
``if __name__ == "__main__":``, because each spawned worker imports the main script.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import pickle
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence

# Environment variables that cap the threads of OpenMP and of BLAS libraries. Each worker process of a
# ProcessExecutor gets them *before* it imports anything: libgomp reads OMP_NUM_THREADS once, when it is
# loaded, so setting it later (e.g. in a pool initializer) would come too late.
THREAD_LIMIT_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                          "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


class Executor(Protocol):
    def run(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        """Call fn(item) for each item; yield (position in items, return value) as calls finish."""


@dataclass(frozen=True)
class ItemLost:
    """What an executor yields for an item it could not compute (the error says why)."""

    error: BaseException


class SerialExecutor:
    """Runs the cells one after the other in this process (no start-up cost, easiest to debug)."""

    def run(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        for position, item in enumerate(items):
            yield position, fn(item)

    def __repr__(self) -> str:
        return "SerialExecutor()"


def check_picklable(fn: Callable) -> None:
    """Raise TypeError, with the reason, if `fn` cannot be sent to another process."""
    try:
        pickle.dumps(fn)
    except Exception as error:
        name = getattr(fn, "__qualname__", repr(fn))
        raise TypeError(
            f"the cell function {name!r} cannot be sent to worker processes ({error}); it must be a "
            "top-level function of an importable module (no lambda, nested function or local class)"
        ) from error


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def _exit_with_parent() -> None:
    """In a worker process: exit as soon as the process that started it is gone.

    A pool's workers wait for work on a queue whose write end they hold themselves, so a parent killed
    without shutting the pool down (SIGKILL, SIGTERM) would leave them waiting forever. The parent holds
    the write end of a pipe whose read end is ``parent_process().sentinel``: it becomes readable when the
    parent dies, whatever killed it.
    """
    parent = multiprocessing.parent_process()
    sentinel = getattr(parent, "sentinel", None)
    if sentinel is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        os._exit(70)  # the result would have nobody to go to; no cleanup can matter

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _start_worker(threads: int) -> None:
    # Pool initializer: repeats the limits inside the worker for libraries that read them lazily, and
    # ties the worker's life to its parent's.
    for name in THREAD_LIMIT_VARIABLES:
        os.environ[name] = str(threads)
    _exit_with_parent()


def _terminate_workers(pool: cf.ProcessPoolExecutor) -> None:
    # concurrent.futures has no public way to stop busy workers before Python 3.14
    # (ProcessPoolExecutor.terminate_workers); its _processes dict has held them since 3.2.
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            process.terminate()
        except Exception:  # already gone
            pass


class ProcessExecutor:
    """Runs cells in `jobs` local worker processes started with "spawn" (or "forkserver").

    Never "fork": the kernels use OpenMP, and a child forked after libgomp has started its thread pool
    can deadlock. Each worker starts with OMP_NUM_THREADS (and the BLAS equivalents) set to
    `threads_per_worker` (default 1), so `jobs` workers on `jobs` cores do not oversubscribe them.
    Start-up costs about a second per worker (a fresh interpreter imports numpy and the study).
    """

    def __init__(self, jobs: int | None = None, *, start_method: str = "spawn",
                 threads_per_worker: int = 1):
        if jobs is None:
            jobs = os.cpu_count() or 1
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
        if start_method not in ("spawn", "forkserver"):
            raise ValueError(f"start_method must be 'spawn' or 'forkserver' (never 'fork'), "
                             f"got {start_method!r}")
        if isinstance(threads_per_worker, bool) or not isinstance(threads_per_worker, int) \
                or threads_per_worker < 1:
            raise ValueError(f"threads_per_worker must be a positive integer, got {threads_per_worker!r}")
        self.jobs = jobs
        self.start_method = start_method
        self.threads_per_worker = threads_per_worker

    def __repr__(self) -> str:
        return f"ProcessExecutor(jobs={self.jobs}, start_method={self.start_method!r})"

    def run(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        check_picklable(fn)  # eagerly: a bad cell function is a usage error, not a cell failure
        return self._run(fn, list(items))

    def _run(self, fn: Callable[[Any], Any], items: list) -> Iterator[tuple[int, Any]]:
        if not items:
            return
        context = multiprocessing.get_context(self.start_method)
        limits = {name: str(self.threads_per_worker) for name in THREAD_LIMIT_VARIABLES}
        pool = cf.ProcessPoolExecutor(max_workers=min(self.jobs, len(items)), mp_context=context,
                                      initializer=_start_worker, initargs=(self.threads_per_worker,))
        completed = False
        try:
            # Workers are spawned during submit(); they inherit the environment of that moment.
            with _environment(limits):
                futures = {pool.submit(fn, item): position for position, item in enumerate(items)}
            for future in cf.as_completed(futures):
                yield futures[future], future.result()
            completed = True
        finally:
            if not completed:
                # Interrupted (Ctrl-C, SIGTERM, the caller stopped iterating) or broken: the cells in
                # flight have nobody to go to, so stop the workers instead of waiting for them.
                _terminate_workers(pool)
            pool.shutdown(wait=True, cancel_futures=True)


class FuturesExecutor:
    """Adapter for any ``concurrent.futures.Executor``-like object, e.g. a cluster engine.

    * an object with ``submit(fn, item)`` returning ``concurrent.futures.Future`` objects: results are
      yielded as they complete. This covers ``concurrent.futures`` pools, ``mpi4py.futures.MPIPoolExecutor``
      and dask's ``Client.get_executor()`` (for Dask, :class:`~precision.study.cluster.DaskExecutor` is
      the complete way: it reports running cells, gives up on one lost cell without stopping the run,
      and starts local clusters with thread limits);
    * an object whose ``submit`` returns other future types with a ``result()`` method: results are
      collected in submission order;
    * an object with only ``map(fn, items)``: results are collected in order.

    The adapter does not own the executor: it neither configures nor shuts it down. The study's module
    must be importable on the workers (same checkout and ``PYTHONPATH``) and thread limits, if wanted,
    are the cluster's configuration.
    """

    def __init__(self, executor: Any):
        if not (hasattr(executor, "submit") or hasattr(executor, "map")):
            raise TypeError(f"{executor!r} has neither submit() nor map()")
        self.executor = executor

    def __repr__(self) -> str:
        return f"FuturesExecutor({type(self.executor).__name__})"

    def run(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        items = list(items)
        if not hasattr(self.executor, "submit"):
            yield from enumerate(self.executor.map(fn, items))
            return
        futures = [self.executor.submit(fn, item) for item in items]
        if all(isinstance(f, cf.Future) for f in futures):
            position_of = {f: position for position, f in enumerate(futures)}
            try:
                for future in cf.as_completed(futures):
                    yield position_of[future], future.result()
            finally:
                for future in futures:
                    future.cancel()
        else:
            for position, future in enumerate(futures):
                yield position, future.result()


def as_executor(executor: Any) -> Executor:
    """Accept one of ours, None (serial), or a concurrent.futures-like object (wrapped)."""
    if executor is None:
        return SerialExecutor()
    if hasattr(executor, "run") and not (hasattr(executor, "submit") or hasattr(executor, "map")):
        return executor
    if isinstance(executor, (SerialExecutor, ProcessExecutor, FuturesExecutor)):
        return executor
    return FuturesExecutor(executor)


__all__ = ["Executor", "SerialExecutor", "ProcessExecutor", "FuturesExecutor", "ItemLost", "as_executor",
           "check_picklable", "THREAD_LIMIT_VARIABLES"]
