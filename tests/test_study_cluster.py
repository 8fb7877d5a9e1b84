"""Studies on a Dask cluster (issue #16): a local cluster of 2 worker processes gives the serial run's
files byte for byte, a worker killed mid-cell loses nothing, a killed client resumes, failures are
recorded, thread limits reach the workers; and the three commands of a real cluster (scheduler, workers,
`precision study --scheduler`). Every process a test starts is stopped by that test."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from precision import cli
from precision.study import Study, cell_id, run_study
from precision.study.executors import THREAD_LIMIT_VARIABLES
from tests.study_runs import (REPOSITORY, TOY_NAME, cell_files, computed, environment,
                              kill_session, processes_left, result_files, run_study_command,
                              serial_reference, start_study, stderr_after)


def grid_ids(out) -> list[str]:
    return [cell["id"] for cell in json.loads((out / "raw" / "grid.json").read_text())["cells"]]


# --------------------------------------------------------------------------------------------------
# without distributed (runs everywhere)

@pytest.mark.parametrize("flags", [["--dask-workers", "2"], ["--scheduler", "tcp://127.0.0.1:8786"]])
def test_without_distributed_the_flags_say_how_to_install_it(toy, tmp_path, monkeypatch, capsys, flags):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    out = tmp_path / "out"
    assert cli.main(["study", TOY_NAME, *flags, "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(f"precision study: {flags[0]} needs")
    assert 'pip install "precision[cluster]"' in error
    assert not out.exists()


def test_where_the_cells_run_is_one_choice(toy, tmp_path, capsys):
    out = ["--out", str(tmp_path / "out")]
    for clash in (["--jobs", "2", "--dask-workers", "2"], ["--jobs", "1", "--scheduler", "tcp://h:1"],
                  ["--dask-workers", "2", "--scheduler", "tcp://h:1"]):
        with pytest.raises(SystemExit) as stop:
            cli.main(["study", TOY_NAME, *clash, *out])
        assert stop.value.code == 2 and "not allowed with" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        cli.main(["study", TOY_NAME, "--dask-workers", "0", *out])
    assert stop.value.code == 2
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------------
# with distributed

@pytest.fixture
def distributed():
    return pytest.importorskip("distributed")


def test_dask_executor_validates_its_arguments(distributed):
    from precision.study.cluster import DaskExecutor

    for bad in [{}, {"scheduler": "tcp://127.0.0.1:1", "workers": 2}, {"workers": 0},
                {"workers": True}, {"workers": 2, "threads_per_worker": 0},
                {"scheduler": "tcp://127.0.0.1:1", "threads_per_worker": 2}, {"scheduler": " "}]:
        with pytest.raises(ValueError):
            DaskExecutor(**bad)
    with pytest.raises(ConnectionError, match="cannot reach the Dask scheduler"):
        DaskExecutor(scheduler="tcp://127.0.0.1:1", timeout=0.5).start()


def lost_result_cell(item):
    """A cell for the test below (top-level: the workers import it): 'b' sleeps when computed a
    second time; 'kill' SIGKILLs its own worker process the first time it runs."""
    name, directory = item
    marker = os.path.join(directory, name)
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:              # computed again
        if name == "b":
            time.sleep(3.0)
        return name
    if name == "kill":
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGKILL)
    return name


def test_a_result_lost_with_its_worker_is_computed_again(distributed, tmp_path):
    """A cell that finished on a worker that then dies before the client fetched its result: the
    scheduler computes it again and the executor waits for it (it used to give up: 'the Dask
    cluster dropped cell tasks', a flaky failure of the test below). One worker, so 'b' finishes
    on the worker the 'kill' cell kills; the client holds off fetching while that happens."""
    from precision.study.cluster import DaskExecutor

    items = [(name, str(tmp_path)) for name in ("a", "b", "kill")]
    with DaskExecutor(workers=1, dashboard=False) as executor:
        results = executor.run(lost_result_cell, items)
        first = next(results)
        deadline = time.monotonic() + 60
        while not (tmp_path / "kill").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)                  # the worker dies with b's result; it restarts
        got = dict([first, *results])
    assert got == {0: "a", 1: "b", 2: "kill"}
    assert (tmp_path / "kill").exists()


def test_a_killed_worker_loses_nothing_and_the_files_match_a_serial_run(distributed, toy, tmp_path):
    """A worker process is SIGKILLed in the middle of a cell; the cell runs again in another process,
    every cell is written once, and every file is the serial run's, byte for byte."""
    already = tmp_path / "already-killed"
    already.touch()  # the serial reference has the same grid, and nothing kills it
    reference = serial_reference(tmp_path / "serial", TOY_KILL_ONCE=str(already))

    marker, log, out = tmp_path / "killed-once", tmp_path / "computed.log", tmp_path / "dask"
    env = environment(toy, TOY_KILL_ONCE=str(marker), TOY_LOG=str(log), TOY_SLEEP="0.2")
    run = run_study_command(["--dask-workers", "2", "--out", str(out)], env, tmp_path)
    assert run.returncode == 0, run.stderr
    assert marker.exists()  # a worker really was killed mid-cell
    assert result_files(out) == reference
    ids = grid_ids(out)
    killed = cell_id({"seed": 3, "n": 300, "kill_worker": True})
    assert killed in ids
    runs = computed(log)
    assert set(cid for cid, _ in runs) == set(ids)  # every cell computed...
    assert len({pid for cid, pid in runs if cid == killed}) >= 2  # ...the killed one again, elsewhere
    assert f"{len(ids)} cell results: {len(ids)} computed now, 0 from an earlier run" in run.stdout
    assert "running on a local Dask cluster at tcp://127.0.0.1:" in run.stderr
    assert re.search(r"\[toy-faults\] \d+/9 cells, [12] running, ", run.stderr), run.stderr
    assert "[toy-faults] 9/9 cells" in run.stderr
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["executor"] == "DaskExecutor(workers=2, threads_per_worker=1)"
    assert provenance["status"] == "finished"
    assert run.left == []  # the local cluster stopped with the run


def test_a_killed_client_leaves_no_worker_and_the_rerun_resumes(distributed, toy, tmp_path):
    variables = {"TOY_CELLS": "10"}
    reference = serial_reference(tmp_path / "serial", **variables)
    log, out = tmp_path / "computed.log", tmp_path / "dask"
    env = environment(toy, TOY_LOG=str(log), TOY_SLEEP="0.4", **variables)
    process = start_study(["--dask-workers", "2", "--out", str(out)], env, tmp_path)
    try:
        deadline = time.monotonic() + 120
        while process.poll() is None and len(cell_files(out)) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process.poll() is None, stderr_after(process)
        os.kill(process.pid, signal.SIGKILL)  # the client only: its workers must go by themselves
        process.wait()
        left = processes_left(process.pid)
    finally:
        kill_session(process)
    assert left == []
    finished = cell_files(out)
    assert 3 <= len(finished) < 10
    before = len(computed(log))

    rerun = run_study_command(["--dask-workers", "2", "--out", str(out)], env, tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    recomputed = {cid for cid, _ in computed(log)[before:]}
    assert recomputed == set(grid_ids(out)) - set(finished)  # only what was missing
    assert f"{10 - len(finished)} computed now, {len(finished)} from an earlier run" in rerun.stdout
    assert all(cell_files(out)[cid] == content for cid, content in finished.items())
    assert result_files(out) == reference
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["earlier_runs"][-1]["status"] == "did not finish (killed)"
    assert rerun.left == []


def test_failures_and_thread_limits_on_a_local_cluster(distributed, toy, tmp_path, monkeypatch):
    """In-process API: a raising cell is recorded with its traceback and the others finish; a cell that
    kills every worker it runs on is given up (KilledWorker) without stopping the run; each worker
    starts with one kernel thread; this process's environment is left as it was."""
    import dask

    from precision.study.cluster import DaskExecutor

    module = cli.find_study(TOY_NAME)  # puts the studies folder on sys.path, which workers inherit
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    environment_before = dict(os.environ)
    good = [{"seed": k, "n": 300} for k in range(3)]
    failing = {"seed": 0, "n": 8, "fail": True}
    study = Study(name="toy", cells=[*good, failing], run_cell=module.run_cell, summarize=module.summarize)
    killer = Study(name="toy", cells=[{"seed": 0, "n": 8, "always_kill_worker": True}],
                   run_cell=module.run_cell)
    limits = Study(name="limits", cells=[{"variables": list(THREAD_LIMIT_VARIABLES), "k": k}
                                         for k in range(2)], run_cell=module.thread_limits)
    # allowed-failures 0: the scheduler gives a task up at the first death of a worker running it
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with DaskExecutor(workers=2) as executor:
            assert executor.n_workers == 2
            assert executor.dashboard_link is None or executor.dashboard_link.startswith("http://127.0.0.1:")
            results = run_study(study, tmp_path / "cells", executor=executor)
            threads = run_study(limits, tmp_path / "limits", executor=executor)
            given_up = run_study(killer, tmp_path / "killer", executor=executor)
            assert executor.running() is None  # between runs
    assert dict(os.environ) == environment_before

    assert sorted(results.results) == sorted(cell_id(cell) for cell in good)
    (record,) = results.failures.values()
    assert record["stage"] == "run_cell" and record["type"] == "ArithmeticError"
    assert "fails on purpose" in record["traceback"] and record["params"] == failing
    assert (tmp_path / "cells" / "summary.csv").read_text().count(",failed,") == 1
    serial = run_study(study, tmp_path / "serial")
    assert cell_files(tmp_path / "cells") == cell_files(tmp_path / "serial") and not serial.ok

    assert all(set(result.values()) == {"1"} for _, result in threads) and threads.ok
    (record,) = given_up.failures.values()
    assert record["stage"] == "executor" and record["type"] == "KilledWorker"


def test_the_three_commands_of_a_cluster(distributed, toy, tmp_path):
    """`dask scheduler`, `dask worker --nworkers 2 --nthreads 1`, then `precision study --scheduler`:
    the workers get the study script from the client (they have no PRECISION_STUDIES_DIR)."""
    reference = serial_reference(tmp_path / "serial")
    scheduler_file = tmp_path / "scheduler.json"
    # the workers import precision from this checkout, as an installed package would be imported
    cluster_env = {key: value for key, value in os.environ.items()
                   if key != cli.STUDIES_ENV and not key.startswith("TOY_")}
    cluster_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY),
                                                              os.environ.get("PYTHONPATH")]))
    started = []
    try:
        started.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
             "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(scheduler_file)],
            env=cluster_env, cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            assert started[0].poll() is None, "the scheduler did not start"
            time.sleep(0.05)
        time.sleep(0.2)  # the file is written whole, but give the writer a moment
        address = json.loads(scheduler_file.read_text())["address"]
        started.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers", "2",
             "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard"],
            env=cluster_env, cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))

        out = tmp_path / "cluster"
        run = run_study_command(["--scheduler", address, "--out", str(out)], environment(toy), tmp_path)
        assert run.returncode == 0, run.stderr
        assert f"running on Dask scheduler {address}" in run.stderr
        assert result_files(out) == reference
        assert run.left == []  # the client is gone; the cluster is not the client's to stop
    finally:
        for process in started:
            kill_session(process)
