"""Faults in studies (issue #17): `precision study` killed at random points, with --jobs 1 and 2, never
loses or corrupts a finished cell, never leaves a process behind, and its reruns end byte-identical to an
uninterrupted run; a killed parallel run stops its workers; corrupt cell files are detected and
recomputed, never trusted."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import time
import warnings

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from precision import cli
from precision.study import load_results, run_study
from precision.study import store as store_module
from tests.study_runs import (TOY_NAME, cell_files, computed, environment, kill_session,
                              processes_left, result_files, run_study_command, serial_reference,
                              start_study, stderr_after, toy_args)

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="finds processes in /proc (Linux)")


# --------------------------------------------------------------------------------------------------
# kills at random points

KILLS_PER_JOBS = 10  # 20 kills in all, with --jobs 1 and --jobs 2
N_CELLS = 12
SIGNALS = [signal.SIGKILL, signal.SIGKILL, signal.SIGTERM, signal.SIGINT]
# exit statuses of a killed run: finished first (0), killed by the signal before Python could handle
# it (-9, -15, -2), or stopped cleanly by the command (130 for SIGINT, 143 for SIGTERM)
KILLED_STATUSES = {0, -signal.SIGKILL, -signal.SIGTERM, -signal.SIGINT, 130, 143}


@pytest.mark.parametrize("jobs", [1, 2])
def test_killed_at_random_points_the_reruns_end_byte_identical(toy, tmp_path, jobs):
    variables = {"TOY_CELLS": str(N_CELLS)}
    reference = serial_reference(tmp_path / "serial", **variables)
    log, out = tmp_path / "computed.log", tmp_path / "out"
    env = environment(toy, TOY_LOG=str(log), TOY_SLEEP="0.05", **variables)
    command = ["--jobs", str(jobs), "--out", str(out)]
    rng = random.Random(2026 + jobs)  # fixed: a failure names its kill and can be replayed
    statuses = []
    for kill in range(KILLS_PER_JOBS):
        finished_before = cell_files(out)
        logged_before = len(computed(log))
        # the kill point: once `wait_for` cell files exist, plus a random delay; with none to wait
        # for, anywhere in the first two seconds (start-up, lock, grid, the first cells)
        wait_for = rng.randrange(len(finished_before), N_CELLS + 1)
        delay = rng.uniform(0, 0.1 if wait_for > len(finished_before) else 2.0)
        signum = rng.choice(SIGNALS)
        where = f"kill {kill} (jobs {jobs}): {signum.name} after {wait_for} cells + {delay:.3f} s"
        process = start_study(command, env, tmp_path)
        try:
            deadline = time.monotonic() + 60
            while process.poll() is None and len(cell_files(out)) < wait_for \
                    and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(delay)
            if process.poll() is None:
                os.kill(process.pid, signum)  # the command only, as `kill PID` would
            status = process.wait(timeout=60)
            left = processes_left(process.pid)
            stderr = stderr_after(process)
        finally:
            kill_session(process)
        assert left == [], f"{where}: processes {left} outlived the run"
        assert status in KILLED_STATUSES, f"{where}: exit status {status}\n{stderr}"
        statuses.append(status)
        now = cell_files(out)
        assert all(now[cid] == content for cid, content in finished_before.items()), where
        assert all(reference[f"{cid}.json"] == content for cid, content in now.items()), \
            f"{where}: a cell file differs from the uninterrupted run's"
        recomputed = {cid for cid, _ in computed(log)[logged_before:]}
        assert not recomputed & set(finished_before), f"{where}: finished cells computed again"
        if status == 0:  # this run finished before the kill: start the next one from scratch
            assert result_files(out) == reference, where
            shutil.rmtree(out)

    assert sum(status != 0 for status in statuses) >= KILLS_PER_JOBS // 2, statuses  # most hit a run
    final = run_study_command(command, env, tmp_path)
    assert final.returncode == 0, final.stderr
    assert final.left == []
    assert result_files(out) == reference
    assert not [p for p in out.rglob("*") if store_module.is_temp_file(p)]


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_parallel_run_stops_its_workers(toy, tmp_path, signum):
    log, out = tmp_path / "computed.log", tmp_path / "out"
    env = environment(toy, TOY_LOG=str(log), TOY_SLEEP="120", TOY_CELLS="4")
    process = start_study(["--jobs", "2", "--out", str(out)], env, tmp_path)
    try:
        deadline = time.monotonic() + 60
        while process.poll() is None and len(computed(log)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        workers = {pid for _, pid in computed(log)}
        assert len(workers) == 2 and process.poll() is None, stderr_after(process)
        os.kill(process.pid, signum)  # the command only: each worker must notice and go
        status = process.wait(timeout=30)  # SIGTERM stops the run without waiting for its cells
        left = processes_left(process.pid)
        stderr = stderr_after(process)
    finally:
        kill_session(process)
    assert left == []
    assert not [pid for pid in workers if os.path.exists(f"/proc/{pid}")
                and open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] not in "ZX"]
    if signum == signal.SIGTERM:
        assert status == 143 and "terminated: finished cells are saved" in stderr
        provenance = json.loads((out / "provenance.json").read_text())
        assert provenance["status"] == "interrupted"
    else:
        assert status == -signal.SIGKILL


# --------------------------------------------------------------------------------------------------
# corrupt cell files

JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)
FIELDS = ["id", "params", "result", "study", "version", "sha256"]
# results that decode badly, sealed with a correct checksum (as a buggy writer would leave them)
UNDECODABLE = [{"x": {"__float__": "bogus"}},
               {"x": {"__ndarray__": {"dtype": "float32", "shape": [5], "data": [1.0]}}},
               {"x": {"__ndarray__": {"dtype": "complex128", "shape": [1], "data": [1.0]}}},
               {"x": {"__ndarray__": {"dtype": "float64", "shape": [2], "base64": "AAA"}}},
               {"x": {"__ndarray__": {"dtype": "no-such-type", "shape": [0], "data": []}}}]

CORRUPTIONS = st.one_of(
    st.tuples(st.just("flip a byte"), st.integers(0, 2**20), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 2**20)),
    st.tuples(st.just("replace the file"), st.binary(max_size=80)),
    st.tuples(st.just("replace a field"), st.sampled_from(FIELDS), JSON_VALUES),
    st.tuples(st.just("change a number"), st.floats(allow_nan=False, allow_infinity=False)),
    st.tuples(st.just("drop a field"), st.sampled_from(FIELDS)),
    st.tuples(st.just("add a field"), st.text(max_size=8), JSON_VALUES),
    st.tuples(st.just("garbage result, resealed"), st.one_of(JSON_SCALARS, st.lists(JSON_SCALARS),
                                                             st.sampled_from(UNDECODABLE))),
)


def corrupt(original: bytes, corruption: tuple) -> bytes:
    kind, *args = corruption
    if kind == "flip a byte":
        data = bytearray(original)
        data[args[0] % len(data)] = args[1]
        return bytes(data)
    if kind == "truncate":
        return original[: args[0] % len(original)]
    if kind == "replace the file":
        return args[0]
    doc = json.loads(original)
    if kind == "replace a field":
        doc[args[0]] = args[1]
    elif kind == "change a number":  # a plausible wrong value in a valid, canonical file
        doc["result"]["relative_error"] = args[0]
    elif kind == "drop a field":
        del doc[args[0]]
    elif kind == "add a field":
        doc[args[0]] = args[1]
    elif kind == "garbage result, resealed":
        doc["result"] = args[0]
        doc["sha256"] = store_module._checksum(doc)
    return store_module.dumps(doc).encode("utf-8")  # canonical JSON: only the content is wrong


def test_corrupt_cell_files_are_recomputed_never_trusted(toy, tmp_path, monkeypatch):
    monkeypatch.setenv("TOY_CELLS", "3")
    study = cli.find_study(TOY_NAME).build(toy_args())
    reference_dir = tmp_path / "reference"
    run_study(study, reference_dir)
    reference = result_files(reference_dir)
    names = sorted(p.name for p in (reference_dir / "raw" / "cells").glob("*.json"))
    runs = iter(range(10**6))

    @given(corruption=CORRUPTIONS, which=st.sampled_from(names))
    def check(corruption, which):
        corrupted = corrupt(reference[which], corruption)
        assume(corrupted != reference[which])
        out = tmp_path / f"run{next(runs)}"
        shutil.copytree(reference_dir, out)
        (out / "raw" / "cells" / which).write_bytes(corrupted)
        cid = which[: -len(".json")]
        assert load_results(out).missing == [cid]  # a reader does not trust it either
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results = run_study(study, out)
        assert results.computed == [cid] and sorted(results.reused) == sorted(set(results.ids) - {cid})
        assert any("recomputing 1 cell" in str(w.message) for w in caught)
        assert result_files(out) == reference
        shutil.rmtree(out)

    check()
