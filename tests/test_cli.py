"""The `precision` command on a tiny toy study in a temporary studies folder (PRECISION_STUDIES_DIR)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from precision import cli
from precision.studies import available as available_studies
from precision.study.engine import package_version

REPOSITORY = Path(__file__).resolve().parents[1]

TOY_STUDY = textwrap.dedent('''
    """Toy: sequential vs pairwise summation, float16 and float32, op by op with numpy scalars."""
    import math

    import numpy as np

    from precision.study import Study


    def summed(values, summation):
        if summation == "sequential":
            total = values[0]
            for value in values[1:]:
                total = total + value
            return total
        half = len(values) // 2
        return values[0] if len(values) == 1 else summed(values[:half], summation) + summed(values[half:], summation)


    def run_cell(params):
        if params.get("fail"):
            raise ArithmeticError("this cell fails on purpose")
        values = np.random.default_rng(params["seed"]).uniform(0, 2, params["n"]).astype(params["format"])
        exact = math.fsum(float(v) for v in values)
        total = summed(list(values), params["summation"])
        return {"relative_error": abs(float(total) - exact) / exact,
                "partial_sums": np.cumsum(values.astype(np.float64)).astype(params["format"])}


    def summarize(params, result):
        return {"relative_error": result["relative_error"]}


    def report(results, out_dir):
        from precision.study.plots import markdown_table, plot_panels
        rows = [dict(params, relative_error=result["relative_error"]) for params, result in results]
        (out_dir / "report.md").write_text("# Toy summation\\n\\n" + markdown_table(rows))
        plot_panels(out_dir / "partial_sums.png",
                    {f: {s: r["partial_sums"] for p, r in results.select(format=f) for s in [p["summation"]]}
                     for f in sorted({p["format"] for p, _ in results})}, width=3, height=2.5)


    def build(args):
        formats = args.formats or ["float16", "float32"]
        cells = [{"format": f, "summation": s, "n": 100 if args.quick else 1000, "seed": args.seed}
                 for f in formats for s in ("sequential", "pairwise")]
        if args.seed == 13:
            cells.append({"format": "float16", "summation": "sequential", "n": 4, "seed": 0, "fail": True})
        return Study(name="toy-sum", cells=cells, run_cell=run_cell, summarize=summarize, report=report,
                     metadata={"formats": formats, "seed": args.seed, "full": args.full,
                               "quick": args.quick},
                     table_columns=["format", "summation", "relative_error"] if args.seed == 5 else None)
''')


@pytest.fixture
def studies(tmp_path, monkeypatch):
    directory = tmp_path / "studies"
    directory.mkdir()
    (directory / "toy_sum.py").write_text(TOY_STUDY)
    (directory / "_shared_helpers.py").write_text('"""Not a study."""\n')
    (directory / "not_a_study.py").write_text('"""Has no build function."""\n')
    (directory / "wrong_type.py").write_text('"""Builds the wrong thing."""\ndef build(args):\n    return 42\n')
    monkeypatch.setenv(cli.STUDIES_ENV, str(directory))
    monkeypatch.setattr(sys, "path", list(sys.path))  # the CLI puts the studies folder on sys.path
    yield directory
    for name in ("toy_sum", "not_a_study", "wrong_type"):
        sys.modules.pop(name, None)


def run_command(*args: str, studies_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, cli.STUDIES_ENV: str(studies_dir),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "precision.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120, cwd=studies_dir.parent)


def test_console_entry_point_is_main():
    with open(REPOSITORY / "pyproject.toml", "rb") as handle:
        scripts = tomllib.load(handle)["project"]["scripts"]
    assert scripts["precision"] == "precision.cli:main" and callable(cli.main)


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"precision {package_version()}"


def test_list(studies, capsys):
    assert cli.main(["study", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines]
    # the studies that come with precision first, then the folder's (_shared_helpers.py is not a study)
    packaged = list(available_studies())
    assert "soft-target-stall" in packaged and "batchnorm-statistics" in packaged
    assert names == packaged + ["not-a-study", "toy-sum", "wrong-type"]
    assert "Toy: sequential vs pairwise summation" in lines[len(packaged) + 1]


def test_without_a_studies_folder_only_the_packaged_studies_are_found(monkeypatch, capsys):
    monkeypatch.delenv(cli.STUDIES_ENV, raising=False)
    assert cli.studies_dir() is None
    assert cli.main(["study", "--list"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == list(available_studies())
    assert cli.main(["study", "no-such-study"]) == 2
    assert "no study 'no-such-study' comes with precision" in capsys.readouterr().err


def test_smoke_run_in_parallel_then_resume(studies):
    first = run_command("study", "toy-sum", "--formats", "f16,f32", "--quick", "--jobs", "2",
                        studies_dir=studies)
    assert first.returncode == 0, first.stderr
    out = studies / "results" / "toy-sum"  # the default output folder
    for name in ("summary.csv", "report.md", "provenance.json", "partial_sums.png"):
        assert (out / name).is_file() and str(out / name) in first.stdout
    header, rule, *rows = first.stdout.split("\n\n")[0].splitlines()
    assert header.split() == ["format", "summation", "n", "seed", "relative_error", "status"]
    assert len(rows) == 4 and all(row.split()[-1] == "ok" for row in rows)
    assert "[toy-sum] 4/4 cells" in first.stderr and "4 computed now" in first.stdout
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["executor"].startswith("ProcessExecutor(jobs=2")
    assert provenance["command"] == ["precision", "study", "toy-sum", "--formats", "f16,f32", "--quick",
                                     "--jobs", "2"]
    assert provenance["formats"] == ["float16", "float32"]
    assert provenance["metadata"] == {"seed": 0, "full": False, "quick": True}
    summary = (out / "summary.csv").read_bytes()

    again = run_command("study", "toy-sum", "--formats", "float16,float32", "--jobs", "2",
                        studies_dir=studies)
    assert again.returncode == 0, again.stderr
    assert "0 computed now, 4 from an earlier run" in again.stdout
    assert (out / "summary.csv").read_bytes() == summary


def test_failures_give_a_nonzero_exit(studies, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["study", "toy-sum", "--seed", "13", "--jobs", "1", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.err and "ArithmeticError: this cell fails on purpose" in captured.err
    assert str(out / "raw" / "failures") in captured.err
    assert len(list((out / "raw" / "failures").glob("*.json"))) == 1
    assert len(list((out / "raw" / "cells").glob("*.json"))) == 4
    assert "failed" in captured.out  # the table shows the failed row


def test_options_reach_build_and_no_resume_recomputes(studies, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["study", "toy-sum", "--formats", "bf16, F16 ,bfloat16", "--full", "--seed", "5",
                     "--jobs", "1", "--out", str(out)]) == 0
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["formats"] == ["bfloat16", "float16"]
    assert provenance["metadata"] == {"seed": 5, "full": True, "quick": False}
    assert provenance["executor"] == "SerialExecutor()"
    header = capsys.readouterr().out.splitlines()[0]
    assert header.split() == ["format", "summation", "relative_error"]  # the study's table_columns
    assert cli.main(["study", "toy-sum", "--formats", "bf16,f16", "--full", "--seed", "5", "--jobs", "1",
                     "--out", str(out), "--no-resume"]) == 0
    assert "4 computed now, 0 from an earlier run" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["study"], "name a study"),
    (["study", "no-such-study"], "soft-target-stall, not-a-study, toy-sum, wrong-type"),
    (["study", "not-a-study"], "no build(args)"),
    (["study", "wrong-type"], "not a precision.study.Study"),
    (["study", "../toy_sum"], "no study"),
])
def test_usage_errors(studies, capsys, argv, message):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["study", "toy-sum", "--formats", "f17"],
                                  ["study", "toy-sum", "--formats", ","],
                                  ["study", "toy-sum", "--quick", "--full"],
                                  ["study", "toy-sum", "--jobs", "0"],
                                  ["frobnicate"]])
def test_bad_options_are_rejected_by_the_parser(studies, capsys, argv):
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    assert "error" in capsys.readouterr().err
