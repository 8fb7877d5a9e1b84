"""The study engine: run a grid of independent deterministic cells, resumably, and keep provenance.

A :class:`Study` is a name, a grid of cells (each a dict of JSON parameters), a top-level function
``run_cell(params) -> dict``, and two optional hooks: ``summarize(params, result) -> dict`` (one row of
summary.csv) and ``report(results, out_dir)`` (writes report.md and plots). :func:`run_study` runs it:

1. lock the output folder, delete leftover temporary files, write ``raw/grid.json`` and a provisional
   ``provenance.json`` (status "running");
2. with ``resume=True`` reuse every cell whose ``raw/cells/<id>.json`` is valid (same params, same study
   version); with ``resume=False`` delete this grid's cell and failure files first;
3. run the other cells on the executor; as each finishes, write its result file atomically (or its
   failure file: parameters and traceback) — so a run killed at any moment loses only cells in flight;
4. summarize every finished cell into summary.csv (grid order), call ``report``, finish provenance.json.

Results are written canonically (sorted keys, floats by repr; see :mod:`precision.study.store`), so the
same grid gives byte-identical ``raw/cells`` files and summary.csv whatever the executor, the number of
jobs or the order in which cells finish. Times live only in provenance.json. Summaries and reports are
recomputed on every run, including a resumed run with nothing left to compute, so changing ``summarize``
or ``report`` never requires recomputing cells; changing what ``run_cell`` computes requires bumping
``Study.version`` (cells of another version are recomputed).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import functools
import io
import json
import os
import platform
import subprocess
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from . import store as _store
from .executors import ItemLost, as_executor
from .progress import Progress

_ROW_RESERVED = ("status", "cell_id")


class StudyBusyError(RuntimeError):
    """Another run holds the output folder's lock."""


# --------------------------------------------------------------------------------------------------
# the study

@dataclass(frozen=True)
class Study:
    """A grid of independent deterministic cells and what to do with their results.

    name: used in messages, provenance and the default output folder.
    cells: the grid, in the order tables list it; each cell a dict of JSON parameters (str, bool, int,
        finite float, None, lists/dicts of those), e.g. ``{"problem": "linear", "format": "float16",
        "optimizer": "adam", "seed": 0}``. Two cells may not have the same parameters.
    run_cell: ``run_cell(params) -> dict`` computes one cell. Deterministic (same params, same result),
        a top-level function of an importable module (it is sent to worker processes by reference).
        Results: dicts of scalars, strings, lists and numpy arrays; NaN and inf are fine.
    summarize: ``summarize(params, result) -> dict`` of scalars: the measurement columns of this cell's
        summary.csv row (the params come first in the row, then these, then ``status`` and ``cell_id``).
    report: ``report(results, out_dir)`` writes report.md, plots... into out_dir, from a
        :class:`StudyResults`.
    version: bump it when run_cell changes what it computes: resume ignores results of other versions.
    metadata: JSON facts recorded in provenance.json (e.g. {"grid": "quick", "formats": [...],
        "seed": 0}); "formats" and "seeds" there replace the values gathered from the cells.
    table_columns: the summary columns ``precision study --table`` prints after a run, in order
        (default: all of them but cell_id); summary.csv always has every column.
    verdict: ``verdict(results) -> str``: what the CLI prints when the run ends -- the findings in a few
        sentences, each computed from this run's numbers, and a compact table that fits 100 columns.
    """

    name: str
    cells: Sequence[dict]
    run_cell: Callable[[dict], dict]
    summarize: Callable[[dict, dict], dict] | None = None
    report: Callable[["StudyResults", Path], None] | None = None
    version: str = "1"
    metadata: dict = field(default_factory=dict)
    table_columns: Sequence[str] | None = None
    verdict: Callable[["StudyResults"], str] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("a study needs a non-empty name")
        if not callable(self.run_cell):
            raise TypeError("run_cell must be callable")
        for hook in ("summarize", "report", "verdict"):
            if getattr(self, hook) is not None and not callable(getattr(self, hook)):
                raise TypeError(f"{hook} must be callable or None")
        if not isinstance(self.version, str):
            raise TypeError(f"version must be a string, got {type(self.version).__name__}")
        if isinstance(self.cells, (str, bytes, dict)) or not isinstance(self.cells, Sequence):
            raise TypeError("cells must be a list of parameter dicts")
        if not self.cells:
            raise ValueError(f"study {self.name!r} has an empty grid")
        params = [_store.canonical_params(cell) for cell in self.cells]
        ids = [_store.cell_id(p) for p in params]
        seen: dict[str, int] = {}
        for position, cid in enumerate(ids):
            if cid in seen:
                raise ValueError(f"cells {seen[cid]} and {position} of study {self.name!r} have the same "
                                 f"parameters {params[position]}")
            seen[cid] = position
        _store.encode(self.metadata, "metadata")
        if self.table_columns is not None:
            if isinstance(self.table_columns, str) or not all(isinstance(c, str) for c in self.table_columns):
                raise TypeError("table_columns must be a list of column names")
            object.__setattr__(self, "table_columns", tuple(self.table_columns))
        object.__setattr__(self, "cells", tuple(params))
        object.__setattr__(self, "_ids", tuple(ids))

    @property
    def ids(self) -> tuple[str, ...]:
        """Cell ids in grid order (see :func:`precision.study.store.cell_id`)."""
        return self._ids  # type: ignore[attr-defined]


def grid(**axes: Sequence[Any]) -> list[dict]:
    """The Cartesian product of parameter axes, in nested order (the last axis varies fastest).

    ``grid(format=["float16", "float32"], seed=[0, 1])`` ->
    ``[{"format": "float16", "seed": 0}, {"format": "float16", "seed": 1}, {"format": "float32", ...}]``.
    Grids that are not products are lists of such grids added together, or filtered comprehensions.
    """
    import itertools

    for name, values in axes.items():
        if isinstance(values, (str, bytes, dict)) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"axis {name!r} must be a non-empty list of values, got {values!r}")
    names = list(axes)
    return [dict(zip(names, combination)) for combination in itertools.product(*axes.values())]


# --------------------------------------------------------------------------------------------------
# results

class StudyResults:
    """What a study run produced (returned by :func:`run_study` and :func:`load_results`).

    ids: cell ids in grid order. params: {id: params}. results: {id: result} for finished cells, in grid
    order (arrays come back as numpy arrays of their dtype). failures: {id: failure record} (params,
    stage, error type, message, traceback). rows: the summary.csv rows (dicts; values as written by
    run_study, or strings when read back by load_results). computed / reused: ids computed by this run
    and taken from an earlier one. report_error: the traceback if the report hook raised.
    """

    def __init__(self, name: str, version: str, out_dir: Path, ids: Sequence[str],
                 params: dict[str, dict]):
        self.name = name
        self.version = version
        self.out_dir = Path(out_dir)
        self.ids = list(ids)
        self.params = {cid: params[cid] for cid in self.ids}
        self.results: dict[str, dict] = {}
        self.failures: dict[str, dict] = {}
        self.rows: list[dict] = []
        self.computed: list[str] = []
        self.reused: list[str] = []
        self.report_error: str | None = None

    def _order(self) -> None:
        rank = {cid: i for i, cid in enumerate(self.ids)}
        self.results = dict(sorted(self.results.items(), key=lambda kv: rank[kv[0]]))
        self.failures = dict(sorted(self.failures.items(), key=lambda kv: rank[kv[0]]))

    @property
    def missing(self) -> list[str]:
        """Ids of cells with neither a result nor a failure (e.g. the run was interrupted)."""
        return [cid for cid in self.ids if cid not in self.results and cid not in self.failures]

    @property
    def ok(self) -> bool:
        return not self.failures and not self.missing and self.report_error is None

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[tuple[dict, dict]]:
        """(params, result) of every finished cell, in grid order."""
        for cid, result in self.results.items():
            yield self.params[cid], result

    def select(self, **criteria: Any) -> list[tuple[dict, dict]]:
        """(params, result) of the finished cells whose params match every criterion, grid order.

        ``results.select(problem="linear", format="float16")``; a criterion given as a list, tuple or
        set matches any of its values.
        """
        def matches(params: dict) -> bool:
            for key, wanted in criteria.items():
                if key not in params:
                    return False
                if isinstance(wanted, (list, tuple, set, frozenset)):
                    if params[key] not in wanted:
                        return False
                elif params[key] != wanted:
                    return False
            return True

        return [(p, r) for p, r in self if matches(p)]

    def __repr__(self) -> str:
        return (f"StudyResults({self.name!r}: {len(self.results)}/{len(self.ids)} finished, "
                f"{len(self.failures)} failed, out_dir={str(self.out_dir)!r})")


# --------------------------------------------------------------------------------------------------
# computing one cell (runs in the worker)

def _error_record(stage: str, error: BaseException) -> dict:
    return {"stage": stage, "type": type(error).__name__, "message": str(error),
            "traceback": "".join(traceback.format_exception(type(error), error, error.__traceback__))}


def compute_cell(run_cell: Callable[[dict], dict], params: dict) -> tuple[str, Any, float]:
    """Run one cell and encode its result: ("ok", encoded result, seconds) or ("error", record, seconds).

    Top-level (picklable). Exceptions of the cell, including an unstorable result, become values, so a
    failing cell never disturbs the executor or the other cells.
    """
    start = time.perf_counter()
    try:
        result = run_cell(dict(params))
        if not isinstance(result, dict):
            raise TypeError(f"run_cell must return a dict, got {type(result).__name__}")
        encoded = _store.encode(result)
    except Exception as error:
        return "error", _error_record("run_cell", error), time.perf_counter() - start
    return "ok", encoded, time.perf_counter() - start


# --------------------------------------------------------------------------------------------------
# provenance

_REPOSITORY = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str | None:
    try:
        completed = subprocess.run(["git", "-C", str(_REPOSITORY), *args], capture_output=True,
                                   text=True, timeout=20, env={**os.environ, "LC_ALL": "C"})
    except (OSError, subprocess.SubprocessError):
        return None
    return completed.stdout if completed.returncode == 0 else None


def git_state(exclude: Path | None = None) -> dict:
    """The checkout the package runs from: {"commit", "dirty", "changed"}.

    commit: HEAD's sha, or "unknown" outside a git checkout (or before the first commit).
    dirty: whether tracked files differ from that commit, ignoring `exclude` (the study's own output
    folder, whose committed results a run rewrites); None if unknown. changed: up to 20 such paths.
    """
    commit = (_git("rev-parse", "--verify", "HEAD") or "").strip()
    if not commit:
        return {"commit": "unknown", "dirty": None, "changed": []}
    pathspec = []
    if exclude is not None:
        try:
            relative = Path(exclude).resolve().relative_to(_REPOSITORY)
            pathspec = ["--", ".", f":(exclude){relative.as_posix()}"]
        except ValueError:
            pass  # the output folder is outside the checkout
    status = _git("status", "--porcelain", "--untracked-files=no", *pathspec)
    if status is None:
        return {"commit": commit, "dirty": None, "changed": []}
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    return {"commit": commit, "dirty": bool(changed), "changed": changed[:20]}


def package_version() -> str:
    try:
        import precision

        version = getattr(precision, "__version__", None)
        if version:
            return str(version)
    except ImportError:
        pass
    try:
        from importlib.metadata import version

        return version("precision")
    except Exception:
        return "unknown"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def platform_facts() -> dict:
    import numpy

    return {"python": platform.python_version(), "implementation": platform.python_implementation(),
            "numpy": numpy.__version__, "os": platform.platform(), "machine": platform.machine(),
            "cpu": _cpu_model(), "cpu_count": os.cpu_count()}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _distinct(cells: Sequence[dict], key: str) -> list:
    values = []
    for cell in cells:
        if key in cell and cell[key] not in values:
            values.append(cell[key])
    return values


class _Provenance:
    def __init__(self, study: Study, store: _store.Store, executor: Any, resume: bool,
                 command: Sequence[str] | None):
        earlier: list = []
        if resume and store.provenance_path.is_file():
            try:
                previous = _store.loads(store.provenance_path.read_text(encoding="utf-8"))
                if previous.get("study") == study.name:
                    earlier = previous.pop("earlier_runs", [])
                    if previous.get("status") == "running":
                        previous["status"] = "did not finish (killed)"
                    earlier.append(previous)
            except (OSError, ValueError, AttributeError):
                earlier = []
        metadata = dict(study.metadata)
        self.store = store
        self.record = {
            "study": study.name, "version": study.version, "package": "precision",
            "package_version": package_version(), "git": git_state(exclude=store.out_dir),
            "grid_size": len(study.cells),
            "formats": metadata.pop("formats", None) or _distinct(study.cells, "format"),
            "seeds": metadata.pop("seeds", None) or _distinct(study.cells, "seed"),
            "metadata": metadata, "platform": platform_facts(), "executor": repr(executor),
            "command": list(sys.argv if command is None else command),
            "started": _now(), "finished": None, "status": "running",
            "cells": {"computed": 0, "reused": 0, "failed": 0, "compute_seconds": 0.0},
            "earlier_runs": earlier,
        }

    def write(self) -> None:
        _store.write_atomic(self.store.provenance_path,
                            json.dumps(_store.encode(self.record, "provenance"), indent=1,
                                       sort_keys=True) + "\n")

    def finish(self, status: str, results: StudyResults, compute_seconds: float) -> None:
        self.record.update(finished=_now(), status=status)
        self.record["cells"] = {"computed": len(results.computed), "reused": len(results.reused),
                                "failed": len(results.failures),
                                "compute_seconds": round(compute_seconds, 3)}
        self.write()


# --------------------------------------------------------------------------------------------------
# summary.csv

def _summary_value(key: str, value: Any) -> Any:
    """A summary cell: None, bool, int, float (NaN and inf allowed), str, or a list of those."""
    import numpy as np

    if isinstance(value, np.generic) and not isinstance(value, (np.bool_, np.integer, np.floating)):
        value = float(value)  # ml_dtypes scalars such as bfloat16
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_summary_value(key, item) for item in value]
    raise TypeError(f"summary column {key!r}: values must be scalars, strings or short lists, "
                    f"not {type(value).__name__}")


def _summary_row(study: Study, params: dict, result: dict) -> dict:
    measured = study.summarize(params, result) if study.summarize is not None else {}
    if not isinstance(measured, dict):
        raise TypeError(f"summarize must return a dict, got {type(measured).__name__}")
    row = dict(params)
    for key, value in measured.items():
        if not isinstance(key, str):
            raise TypeError(f"summary column names must be strings, got {key!r}")
        if key in params or key in _ROW_RESERVED:
            raise ValueError(f"summarize returned the column {key!r}, which is a cell parameter or "
                             f"reserved ({', '.join(_ROW_RESERVED)})")
        row[key] = _summary_value(key, value)
    return row


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return str(value)


def write_summary(path: Path, rows: list[dict]) -> None:
    """summary.csv: columns = params (first-appearance order), measurements, status, cell_id."""
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns and key not in _ROW_RESERVED:
                columns.append(key)
    columns += list(_ROW_RESERVED)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_value(row.get(column)) for column in columns])
    _store.write_atomic(path, buffer.getvalue())


def read_summary(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# --------------------------------------------------------------------------------------------------
# running

@contextlib.contextmanager
def _locked(store: _store.Store) -> Iterator[None]:
    """Exclusive lock on the output folder: two runs must not write the same cells."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    handle = open(store.lock_path, "a+")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise StudyBusyError(f"another run is writing to {store.out_dir}") from None
        yield
    finally:
        handle.close()


@contextlib.contextmanager
def _closing(iterator: Iterator) -> Iterator[None]:
    """Close a generator on the way out, so an executor releases its workers even when interrupted."""
    try:
        yield
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def run_study(study: Study, out_dir: Path | str, *, executor: Any = None, resume: bool = True,
              progress: bool | Progress = False, command: Sequence[str] | None = None) -> StudyResults:
    """Run every unfinished cell of `study`, write results, summary.csv, the report and provenance.

    executor: None (serial, in this process), a :class:`SerialExecutor` / :class:`ProcessExecutor` /
        :class:`FuturesExecutor`, or any concurrent.futures-like object (wrapped in FuturesExecutor).
    resume: reuse finished cells found in out_dir (default); False recomputes the whole grid.
    progress: True for the stderr display of :mod:`precision.study.progress`, or a Progress instance.
    command: the command line recorded in provenance (default sys.argv).

    Failing cells do not stop the run: they are recorded in raw/failures/ and in ``results.failures``
    (check ``results.ok``). KeyboardInterrupt stops it; finished cells stay on disk for the next run.
    """
    if not isinstance(study, Study):
        raise TypeError(f"run_study needs a Study, got {type(study).__name__}")
    runner = as_executor(executor)
    store = _store.Store(out_dir)
    store.create()
    params_of = dict(zip(study.ids, study.cells))
    results = StudyResults(study.name, study.version, store.out_dir, study.ids, params_of)
    display = progress if isinstance(progress, Progress) else Progress(study.name, enabled=bool(progress))

    with _locked(store):
        store.remove_temp_files()
        store.write_grid(study.name, study.version, list(study.ids), list(study.cells))
        provenance = _Provenance(study, store, runner, resume, command)
        provenance.write()

        pending: list[str] = []
        problems: list[str] = []
        for cid in study.ids:
            if not resume:
                store.discard(cid)
                pending.append(cid)
                continue
            result, problem = store.read_cell(cid, params_of[cid], study.version)
            if problem:
                problems.append(problem)
            if result is None:
                pending.append(cid)
            else:
                results.results[cid] = result
                results.reused.append(cid)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            warnings.warn(f"recomputing {len(problems)} cell(s) whose result file cannot be used: "
                          f"{problems[0]}{more}", stacklevel=2)

        compute_seconds = 0.0
        display.start(len(study.ids), reused=len(results.reused),
                      running=getattr(runner, "running", None))
        try:
            task = functools.partial(compute_cell, study.run_cell)
            outcomes = iter(runner.run(task, [params_of[cid] for cid in pending]))
            finished: set[str] = set()
            with _closing(outcomes):
                while True:
                    try:
                        position, outcome = next(outcomes)
                    except StopIteration:
                        break
                    except Exception as error:  # the executor broke (e.g. a worker process died)
                        _record_executor_failure(store, results, study, pending, finished, error,
                                                 display)
                        break
                    cid = pending[position]
                    finished.add(cid)
                    if isinstance(outcome, ItemLost):  # the executor gave up on this cell alone
                        _record_failure(store, results, study, cid,
                                        _error_record("executor", outcome.error))
                        display.advance(False)
                        continue
                    kind, payload, seconds = outcome
                    compute_seconds += seconds
                    if kind == "ok":
                        store.write_cell(study.name, study.version, cid, params_of[cid], payload)
                        results.results[cid] = _store.decode(payload)
                        results.computed.append(cid)
                    else:
                        _record_failure(store, results, study, cid, payload)
                    display.advance(kind == "ok")
            results._order()
            _summarize(study, store, results)
            _report(study, results)
            status = "finished" if results.ok else "finished with failures"
        except BaseException as error:
            status = "interrupted" if isinstance(error, KeyboardInterrupt) else \
                f"stopped by {type(error).__name__}: {error}"
            raise
        finally:
            display.finish()
            provenance.finish(status, results, compute_seconds)
    return results


def _record_executor_failure(store, results, study, pending, finished, error, display) -> None:
    record = _error_record("executor", error)
    record["message"] = f"the executor failed before this cell finished ({error}); rerun to resume"
    for cid in pending:
        if cid not in finished:
            _record_failure(store, results, study, cid, dict(record))
            display.advance(False)


def _record_failure(store: _store.Store, results: StudyResults, study: Study, cid: str,
                    error: dict) -> None:
    record = {"id": cid, "params": results.params[cid], "study": study.name, "version": study.version,
              **error}
    store.write_failure(cid, record)
    results.failures[cid] = record


def _summarize(study: Study, store: _store.Store, results: StudyResults) -> None:
    rows = []
    for cid in results.ids:
        params = results.params[cid]
        if cid in results.results:
            try:
                row = _summary_row(study, params, results.results[cid])
                row["status"] = "ok"
                if cid not in results.failures:
                    store.failure_path(cid).unlink(missing_ok=True)
            except Exception as error:
                _record_failure(store, results, study, cid, _error_record("summarize", error))
                row = dict(params, status="summarize failed")
        else:
            row = dict(params, status="failed" if cid in results.failures else "missing")
        row["cell_id"] = cid
        rows.append(row)
    results._order()
    results.rows = rows
    write_summary(store.summary_path, rows)


def _report(study: Study, results: StudyResults) -> None:
    if study.report is None:
        return
    try:
        study.report(results, results.out_dir)
    except Exception as error:
        results.report_error = _error_record("report", error)["traceback"]


def load_results(out_dir: Path | str) -> StudyResults:
    """Read back the results of a study run from `out_dir` (grid order; unfinished cells absent).

    ``rows`` are read from summary.csv when it exists (values are strings there).
    """
    store = _store.Store(out_dir)
    grid = store.read_grid()
    ids = [cell["id"] for cell in grid["cells"]]
    params = {cell["id"]: cell["params"] for cell in grid["cells"]}
    results = StudyResults(grid["study"], grid["version"], store.out_dir, ids, params)
    for cid in ids:
        result, _ = store.read_cell(cid, params[cid], grid["version"])
        if result is not None:
            results.results[cid] = result
        else:
            failure = store.read_failure(cid)
            if failure is not None:
                results.failures[cid] = failure
    if store.summary_path.is_file():
        results.rows = read_summary(store.summary_path)
    return results


__all__ = ["Study", "StudyResults", "grid", "run_study", "load_results", "compute_cell", "write_summary",
           "read_summary", "git_state", "package_version", "platform_facts"]
