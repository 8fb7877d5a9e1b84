"""The ``precision`` command.

    precision --version
    precision study --list
    precision study NAME [--formats f16,bf16,...] [--smoke | --quick | --full] [--out DIR]
                         [--resume | --no-resume] [--jobs N | --dask-workers N | --scheduler ADDRESS]
                         [--seed S] [--table]

A study NAME is one of the studies that come with precision (the subpackages of
:mod:`precision.studies`, each with a ``NAME`` and a ``build(args) -> Study``), or a script
``<NAME with - as _>.py`` in the folder named by the environment variable PRECISION_STUDIES_DIR, which
defines ``build(args) -> Study`` (that folder is put on sys.path, so the script's functions can be sent
to worker processes). ``args`` has: ``name``, ``formats`` (list of canonical format names, or None for
the study's default), ``size`` ("smoke", "quick" or "full"), ``full`` and ``quick`` (booleans), ``seed``
(int >= 0, default 0), ``jobs``, ``out``.

Where the cells run: in this process (``--jobs 1``), in N local worker processes (``--jobs N``, the
default is one per CPU), on a local Dask cluster of N worker processes (``--dask-workers N``) or on a
running Dask cluster (``--scheduler tcp://HOST:PORT``); the last two need the optional ``distributed``
package (``pip install "precision[cluster]"``, see :mod:`precision.study.cluster`). Every way gives the
same result files, byte for byte.

Results go to ``studies/results/<NAME>/`` under the current directory unless --out is given -- never into
the installed package. When the run ends the command prints the study's verdict (a few sentences computed
from the run's numbers, and a compact table), then where the report, plots and raw results are;
``--table`` also prints every summary column of every cell. Exit status: 0 when every cell and the
report succeeded, 1 when some failed (listed on stderr), 2 for usage errors (and an unreachable
scheduler), 130 when interrupted (Ctrl-C), 143 when terminated (SIGTERM); an interrupted or terminated run
stops its workers, keeps every finished cell and resumes when run again.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import os
import signal
import sys
from pathlib import Path
from typing import Sequence

STUDIES_ENV = "PRECISION_STUDIES_DIR"


def studies_dir() -> Path | None:
    """The folder of extra study scripts named by $PRECISION_STUDIES_DIR, or None."""
    override = os.environ.get(STUDIES_ENV)
    if override:
        return Path(override).expanduser().resolve()
    return None


def all_studies() -> list[tuple[str, str]]:
    """(name, one-line summary) of the studies that come with precision, then of the extra scripts."""
    from precision import studies

    found = [(name, _first_line(module.__doc__)) for name, module in studies.available().items()]
    directory = studies_dir()
    if directory is not None:
        found += [(name, summary) for name, summary in list_studies(directory)
                  if name not in {n for n, _ in found}]
    return found


def _first_line(doc: str | None) -> str:
    doc = (doc or "").strip()
    return doc.splitlines()[0] if doc else ""


def find_study(name: str):
    """The module of study `name`: a study that comes with precision, else an extra script."""
    from precision import studies

    try:
        return studies.load(name)
    except LookupError as error:
        directory = studies_dir()
        if directory is None:
            raise LookupError(f"{error}; set {STUDIES_ENV} to a folder to add study scripts") from None
    return load_study_module(name, directory)


def list_studies(directory: Path) -> list[tuple[str, str]]:
    """(name, first line of the script's docstring) for every studies/*.py not starting with '_'."""
    found = []
    for path in sorted(directory.glob("*.py")) if directory.is_dir() else []:
        if path.name.startswith("_"):
            continue
        try:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        except (SyntaxError, OSError, UnicodeDecodeError):
            doc = "(unreadable script)"
        found.append((path.stem.replace("_", "-"), doc.strip().splitlines()[0] if doc.strip() else ""))
    return found


def load_study_module(name: str, directory: Path):
    """Import <directory>/<name>.py by its module name, with the folder on sys.path."""
    module_name = name.replace("-", "_")
    path = directory / f"{module_name}.py"
    if not module_name.isidentifier() or not path.is_file():
        available = ", ".join(n for n, _ in all_studies()) or "none"
        raise LookupError(f"no study {name!r} comes with precision or is in {directory} "
                          f"(available: {available})")
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    module = importlib.import_module(module_name)
    if Path(module.__file__ or "").resolve() != path.resolve():
        raise LookupError(f"the module name {module_name!r} of study {name!r} is taken by "
                          f"{module.__file__}; rename the study script")
    if not callable(getattr(module, "build", None)):
        raise LookupError(f"{path} defines no build(args) function")
    return module


def _format_list(text: str) -> list[str]:
    """'f16, bf16,float32' -> ['float16', 'bfloat16', 'float32'] (canonical names, no repeats)."""
    from precision.formats import format as lookup

    names = []
    for raw in text.split(","):
        if not raw.strip():
            continue
        try:
            name = lookup(raw).name
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        if name not in names:
            names.append(name)
    if not names:
        raise argparse.ArgumentTypeError("--formats needs at least one format")
    return names


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a seed (an integer >= 0), got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"expected a seed (an integer from 0 to 2**63 - 1), got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from precision.study.engine import package_version

    parser = argparse.ArgumentParser(
        prog="precision", description="What floating-point formats do to training, measured exactly.")
    parser.add_argument("--version", action="version", version=f"precision {package_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    study = commands.add_parser("study", help="run a study (see --list)",
                                description="Run a study grid, resumably, and print its summary.")
    study.add_argument("name", nargs="?", help="study name, e.g. soft-target-stall")
    study.add_argument("--list", action="store_true", help="list the available studies and exit")
    study.add_argument("--formats", type=_format_list, default=None, metavar="F1,F2,...",
                       help="comma-separated formats, e.g. f16,bf16,f32,f64 (default: the study's)")
    size = study.add_mutually_exclusive_group()
    size.add_argument("--smoke", dest="size", action="store_const", const="smoke",
                      help="a few short cells: checks an installation in seconds")
    size.add_argument("--quick", dest="size", action="store_const", const="quick",
                      help="the quick grid (default)")
    size.add_argument("--full", dest="size", action="store_const", const="full", help="the whole grid")
    study.set_defaults(size="quick")
    study.add_argument("--out", type=Path, default=None, metavar="DIR",
                       help="output folder (default: studies/results/NAME under the current directory)")
    study.add_argument("--table", action="store_true",
                       help="also print every summary column of every cell (they are in summary.csv)")
    study.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                       help="reuse finished cells of an earlier run in the output folder (default)")
    where = study.add_mutually_exclusive_group()
    # default None, resolved later: argparse sees a clash only between options that differ from their default
    where.add_argument("--jobs", type=_positive_int, default=None, metavar="N",
                       help="worker processes (default: the number of CPUs; 1 runs in this process)")
    where.add_argument("--dask-workers", type=_positive_int, default=None, metavar="N",
                       help="start a local Dask cluster of N worker processes and run the cells there")
    where.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="run the cells on the Dask cluster of this scheduler, e.g. tcp://HOST:8786")
    study.add_argument("--seed", type=_seed, default=0, metavar="S", help="base random seed (default 0)")
    return parser


def _run_study(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from precision.study import ProcessExecutor, SerialExecutor, Study, run_study
    from precision.study.engine import StudyBusyError
    from precision.study.plots import text_table

    if args.list:
        found = all_studies()
        for name, summary in found:
            print(f"{name:28s} {summary}")
        if not found:
            print("no studies found", file=sys.stderr)
        return 0
    if not args.name:
        print("precision study: name a study, or use --list", file=sys.stderr)
        return 2
    if args.jobs is None:
        args.jobs = os.cpu_count() or 1
    on_dask = args.scheduler is not None or args.dask_workers is not None
    if on_dask:
        from precision.study.cluster import INSTALL_HINT, ClusterUnavailable, require_distributed

        try:
            require_distributed()
        except ClusterUnavailable:
            flag = "--scheduler" if args.scheduler is not None else "--dask-workers"
            print(f"precision study: {flag} needs Dask's distributed package: {INSTALL_HINT}",
                  file=sys.stderr)
            return 2
    try:
        module = find_study(args.name)
    except LookupError as error:
        print(f"precision study: {error}", file=sys.stderr)
        return 2
    args.full = args.size == "full"
    args.quick = args.size == "quick"
    study = module.build(args)
    if not isinstance(study, Study):
        print(f"precision study: build() of {args.name!r} returned {type(study).__name__}, "
              "not a precision.study.Study", file=sys.stderr)
        return 2
    out_dir = args.out if args.out is not None else Path("studies") / "results" / args.name
    problem = _unusable_output(out_dir)
    if problem:
        print(f"precision study: {problem}", file=sys.stderr)
        return 2
    try:
        with _terminate_as_interrupt(), contextlib.ExitStack() as cleanup:
            if on_dask:
                executor = _start_dask(args, module, cleanup)
                if executor is None:
                    return 2
            else:
                executor = SerialExecutor() if args.jobs == 1 else ProcessExecutor(jobs=args.jobs)
            results = run_study(study, out_dir, executor=executor, resume=args.resume, progress=True,
                                command=["precision", *argv])
    except StudyBusyError as error:
        print(f"precision study: {error}; wait for it to finish (or stop it), then run again",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt as interruption:
        what = "terminated" if isinstance(interruption, Terminated) else "interrupted"
        print(f"\n{what}: finished cells are saved in {out_dir}; run the same command again "
              "to resume", file=sys.stderr)
        return 143 if isinstance(interruption, Terminated) else 130

    if args.table or study.verdict is None:
        columns = study.table_columns or [c for c in (results.rows[0] if results.rows else {})
                                          if c != "cell_id"]
        print(text_table(results.rows, columns), end="")
        print()
    if study.verdict is not None and results.results:
        try:
            print(study.verdict(results).rstrip())
        except Exception as error:  # the files are written; a verdict bug must not hide them
            print(f"(the verdict could not be computed: {type(error).__name__}: {error})", file=sys.stderr)
        print()
    out = results.out_dir.resolve()
    plots = sorted(out.rglob("*.png"))
    print(f"report:     {out / 'report.md'}")
    print(f"table:      {out / 'summary.csv'} (one row per cell)")
    if len(plots) <= 4:
        print("plots:      " + ("\n            ".join(str(p) for p in plots) if plots else "none"))
    else:
        print(f"plots:      {len(plots)} PNGs under {out}")
    print(f"provenance: {out / 'provenance.json'}")
    print(f"raw:        {out / 'raw'} ({len(results.results)} cell results: {len(results.computed)} "
          f"computed now, {len(results.reused)} from an earlier run)")

    for cid, failure in results.failures.items():
        print(f"FAILED {cid} ({failure.get('stage')}): {failure.get('type')}: "
              f"{failure.get('message')}", file=sys.stderr)
    if results.failures:
        print(f"{len(results.failures)} cell(s) failed; tracebacks in "
              f"{results.out_dir / 'raw' / 'failures'}; rerun to retry them", file=sys.stderr)
    if results.report_error:
        print(f"the report failed:\n{results.report_error}", file=sys.stderr)
    return 0 if results.ok else 1


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the run stops its workers and records where it stopped."""


@contextlib.contextmanager
def _terminate_as_interrupt():
    def terminate(signum, frame):
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread (e.g. main() called from a thread): keep the default
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _start_dask(args: argparse.Namespace, module, cleanup: contextlib.ExitStack):
    """The DaskExecutor of --scheduler / --dask-workers, started and announced; None after an error."""
    from precision.study.cluster import DaskExecutor

    try:
        executor = DaskExecutor(scheduler=args.scheduler, workers=args.dask_workers)
        cleanup.callback(executor.close)
        executor.start()
    except (ValueError, ConnectionError, RuntimeError) as error:
        print(f"precision study: {error}", file=sys.stderr)
        return None
    if args.scheduler is not None:
        script = Path(getattr(module, "__file__", "") or "")
        if script.suffix == ".py" and not module.__name__.startswith("precision."):
            executor.upload(script)  # a study script of $PRECISION_STUDIES_DIR: the workers lack it
        where = f"Dask scheduler {args.scheduler}"
    else:
        where = f"a local Dask cluster at {executor.client.scheduler.address}"
    workers = executor.n_workers
    print(f"[{args.name}] running on {where} with {workers} worker(s)"
          + ("" if workers else " (none yet: the cells wait until workers connect)"), file=sys.stderr)
    if executor.dashboard_link:
        print(f"[{args.name}] Dask dashboard: {executor.dashboard_link}", file=sys.stderr)
    return executor


def _unusable_output(out_dir: Path) -> str | None:
    """Why `out_dir` cannot hold a study's results, or None: checked before any cell runs."""
    existing = Path(out_dir)
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing == Path(out_dir) and not existing.is_dir():
        return f"--out {out_dir} is a file, not a folder"
    if existing.exists() and not existing.is_dir():
        return f"cannot create {out_dir}: {existing} is a file"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot write to {existing} (permission denied); choose another folder with --out"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "study":
        return _run_study(args, argv)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
