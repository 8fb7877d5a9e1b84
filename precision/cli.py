"""The ``precision`` command.

    precision --version
    precision study --list
    precision study NAME [--formats f16,bf16,...] [--quick | --full] [--out DIR]
                         [--resume | --no-resume] [--jobs N] [--seed S]

A study NAME is the script ``studies/<NAME with - as _>.py`` of the repository (or of the folder named
by the environment variable PRECISION_STUDIES_DIR). The script defines ``build(args) -> Study``, where
args has: ``name``, ``formats`` (list of canonical format names, or None for the study's default),
``full`` and ``quick`` (booleans, quick unless --full), ``seed`` (int, default 0), ``jobs``, ``out``.
The studies folder is put on sys.path, so the script's functions can be sent to worker processes.

Results go to ``studies/results/<NAME>/`` unless --out is given. Exit status: 0 when every cell and the
report succeeded, 1 when some failed (listed on stderr), 2 for usage errors, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import os
import sys
from pathlib import Path
from typing import Sequence

STUDIES_ENV = "PRECISION_STUDIES_DIR"


def studies_dir() -> Path:
    """$PRECISION_STUDIES_DIR, else the repository's studies/ (the package is installed editable)."""
    override = os.environ.get(STUDIES_ENV)
    if override:
        return Path(override).expanduser().resolve()
    return Path(__file__).resolve().parents[1] / "studies"


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
    """Import studies/<name>.py by its module name, with the studies folder on sys.path."""
    module_name = name.replace("-", "_")
    path = directory / f"{module_name}.py"
    if not module_name.isidentifier() or not path.is_file():
        available = ", ".join(n for n, _ in list_studies(directory)) or "none"
        raise LookupError(f"no study {name!r} in {directory} (available: {available})")
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
    size.add_argument("--quick", dest="full", action="store_false", help="the quick grid (default)")
    size.add_argument("--full", dest="full", action="store_true", help="the whole grid")
    study.set_defaults(full=False)
    study.add_argument("--out", type=Path, default=None, metavar="DIR",
                       help="output folder (default: studies/results/NAME)")
    study.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                       help="reuse finished cells of an earlier run in the output folder (default)")
    study.add_argument("--jobs", type=_positive_int, default=os.cpu_count() or 1, metavar="N",
                       help="worker processes (default: the number of CPUs; 1 runs in this process)")
    study.add_argument("--seed", type=int, default=0, metavar="S", help="base random seed (default 0)")
    return parser


def _run_study(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from precision.study import ProcessExecutor, SerialExecutor, Study, run_study
    from precision.study.plots import text_table

    directory = studies_dir()
    if args.list:
        found = list_studies(directory)
        for name, summary in found:
            print(f"{name:28s} {summary}")
        if not found:
            print(f"no studies in {directory}", file=sys.stderr)
        return 0
    if not args.name:
        print("precision study: name a study, or use --list", file=sys.stderr)
        return 2
    try:
        module = load_study_module(args.name, directory)
    except LookupError as error:
        print(f"precision study: {error}", file=sys.stderr)
        return 2
    args.quick = not args.full
    study = module.build(args)
    if not isinstance(study, Study):
        print(f"precision study: build() of {args.name!r} returned {type(study).__name__}, "
              "not a precision.study.Study", file=sys.stderr)
        return 2
    out_dir = args.out if args.out is not None else directory / "results" / args.name
    executor = SerialExecutor() if args.jobs == 1 else ProcessExecutor(jobs=args.jobs)
    try:
        results = run_study(study, out_dir, executor=executor, resume=args.resume, progress=True,
                            command=["precision", *argv])
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished cells are saved in {out_dir}; run the same command again "
              "to resume", file=sys.stderr)
        return 130

    columns = study.table_columns or [c for c in (results.rows[0] if results.rows else {})
                                      if c != "cell_id"]
    print(text_table(results.rows, columns), end="")
    print()
    written = [results.out_dir / "summary.csv", results.out_dir / "report.md",
               *sorted(results.out_dir.rglob("*.png")), results.out_dir / "provenance.json"]
    print(f"results in {results.out_dir}:")
    for path in written:
        if path.is_file():
            print(f"  {path}")
    print(f"  {results.out_dir / 'raw'} ({len(results.results)} cell results: "
          f"{len(results.computed)} computed now, {len(results.reused)} from an earlier run)")

    for cid, failure in results.failures.items():
        print(f"FAILED {cid} ({failure.get('stage')}): {failure.get('type')}: "
              f"{failure.get('message')}", file=sys.stderr)
    if results.failures:
        print(f"{len(results.failures)} cell(s) failed; tracebacks in "
              f"{results.out_dir / 'raw' / 'failures'}; rerun to retry them", file=sys.stderr)
    if results.report_error:
        print(f"the report failed:\n{results.report_error}", file=sys.stderr)
    return 0 if results.ok else 1


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
