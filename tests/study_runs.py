"""A toy study script and helpers for tests that run, kill and resume `precision study` as a user would.

The toy lives in a temporary PRECISION_STUDIES_DIR (as a user's study script would), so worker processes
and clusters import its cell function by name. Every computation appends "<cell id> <pid>" to $TOY_LOG.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]

TOY_NAME = "toy-faults"

TOY_SOURCE = textwrap.dedent('''
    """Toy for fault tests: float32 sums of seeded draws, each cell taking $TOY_SLEEP seconds."""
    import math
    import os
    import signal
    import time

    import numpy as np

    from precision.study import Study, cell_id


    def run_cell(params):
        log = os.environ.get("TOY_LOG")
        if log:
            with open(log, "a") as handle:
                handle.write(f"{cell_id(params)} {os.getpid()}\\n")
        if params.get("kill_worker"):
            # $TOY_KILL_ONCE names a marker file: the first computation creates it and kills its own
            # process in the middle of the cell (a worker dying); later ones find it and go on.
            try:
                os.close(os.open(os.environ["TOY_KILL_ONCE"], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        if params.get("always_kill_worker"):
            os.kill(os.getpid(), signal.SIGKILL)
        if params.get("fail"):
            raise ArithmeticError("this cell fails on purpose")
        time.sleep(float(os.environ.get("TOY_SLEEP", "0")))
        values = np.random.default_rng(params["seed"]).uniform(0, 2, params["n"]).astype(np.float32)
        total = np.float32(0)
        for value in values:
            total = total + value  # rounded to float32 after every addition
        exact = math.fsum(float(v) for v in values)
        return {"sum": total, "relative_error": abs(float(total) - exact) / exact,
                "partial_sums": np.cumsum(values)}


    def thread_limits(params):
        return {name: os.environ.get(name) for name in params["variables"]}


    def summarize(params, result):
        return {"sum": result["sum"], "relative_error": result["relative_error"]}


    def report(results, out_dir):
        (out_dir / "report.md").write_text(f"# Toy faults\\n\\n{len(results)} cells\\n")


    def build(args):
        cells = [{"seed": args.seed + k, "n": 300} for k in range(int(os.environ.get("TOY_CELLS", "8")))]
        if os.environ.get("TOY_KILL_ONCE"):
            cells.append({"seed": 3, "n": 300, "kill_worker": True})
        return Study(name="toy-faults", cells=cells, run_cell=run_cell, summarize=summarize,
                     report=report)
''')


def write_toy(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "toy_faults.py").write_text(TOY_SOURCE)
    return directory


def toy_args(seed: int = 0) -> argparse.Namespace:
    return argparse.Namespace(name=TOY_NAME, formats=None, size="quick", full=False, quick=True,
                              seed=seed, jobs=1, out=None)


def environment(studies: Path, **variables: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("TOY_") and key not in ("OMP_NUM_THREADS",)}
    env.update({"PRECISION_STUDIES_DIR": str(studies),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))})
    env.update(variables)
    return env


def start_study(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    """`precision study ...` in a new session (so every process it starts can be found afterwards)."""
    return subprocess.Popen([sys.executable, "-m", "precision.cli", "study", TOY_NAME, *args], env=env,
                            cwd=cwd, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def run_study_command(args: list[str], env: dict[str, str], cwd: Path,
                      timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the command to its end; `.left` lists the processes of its session still alive after it."""
    process = start_study(args, env, cwd)
    try:
        process.wait(timeout=timeout)
        left = processes_left(process.pid)
        stderr = stderr_after(process)
        stdout = process.stdout.read()
    finally:
        kill_session(process)
    completed = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    completed.left = left
    return completed


def session_processes(session: int) -> list[int]:
    """Live (not zombie) processes of a session, from /proc (Linux)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == session and fields[0] not in ("Z", "X"):
            found.append(int(entry))
    return found


def processes_left(session: int, within: float = 20.0) -> list[int]:
    """The processes of `session` still alive after waiting up to `within` seconds for them to exit."""
    deadline = time.monotonic() + within
    while True:
        left = session_processes(session)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def _kill_session_of(process: subprocess.Popen) -> None:
    """SIGKILL the command and whatever is left of the session it started (never other processes)."""
    if process.poll() is None:
        process.kill()
    process.wait()
    for pid in session_processes(process.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def stderr_after(process: subprocess.Popen) -> str:
    """The command's stderr. It and anything left of its session are killed first: a leftover process
    holding the pipe would make the read wait forever."""
    _kill_session_of(process)
    return process.stderr.read()


def kill_session(process: subprocess.Popen) -> None:
    """Clean-up: SIGKILL whatever is left of the session the command started, close its pipes."""
    _kill_session_of(process)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def computed(log: Path) -> list[tuple[str, int]]:
    """(cell id, pid) of every computation logged so far."""
    if not log.exists():
        return []
    return [(line.split()[0], int(line.split()[1])) for line in log.read_text().splitlines() if line]


def result_files(out: Path) -> dict[str, bytes]:
    """The files a run must reproduce byte for byte: every cell file, grid.json and summary.csv."""
    files = {p.name: p.read_bytes() for p in (out / "raw" / "cells").glob("*.json")}
    for path in (out / "raw" / "grid.json", out / "summary.csv"):
        if path.exists():
            files[path.name] = path.read_bytes()
    return files


def cell_files(out: Path) -> dict[str, bytes]:
    cells = out / "raw" / "cells"
    return {p.stem: p.read_bytes() for p in cells.glob("*.json")} if cells.is_dir() else {}


# ------------------------------------------------------------------ shared by the fault and cluster tests

def serial_reference(out, **variables) -> dict[str, bytes]:
    """The files of a serial run (in this process) of the toy grid that `variables` select."""
    from precision import cli

    with pytest.MonkeyPatch.context() as patch:
        for name, value in variables.items():
            patch.setenv(name, value)
        assert cli.main(["study", TOY_NAME, "--jobs", "1", "--out", str(out)]) == 0
    return result_files(out)
