"""The fuzz suite: every public entry point under hostile input, one subprocess per group.

A segfault, an abort or a hang kills only the subprocess: the test then fails with the
reproducer of the call that was running (tests/fuzz/spec.py), and the group's remaining targets
run in a fresh subprocess.  Bounded by HYPOTHESIS_PROFILE (ci: 40 cases per target, the whole
suite well under two minutes); ``make fuzz`` runs the "thorough" profile.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .targets import GROUPS, TARGETS

import precision

ROOT = Path(__file__).resolve().parents[2]
# the subprocess imports the precision this process imports (``make sanitize`` runs the suite
# against an instrumented copy elsewhere) and the tests package from ROOT
PACKAGE_PARENT = Path(precision.__file__).resolve().parents[1]
# per subprocess; a single call may take at most CALL_TIMEOUT (a hang dumps the stacks)
GROUP_TIMEOUT = float(os.environ.get("PRECISION_FUZZ_TIMEOUT", "600"))
CALL_TIMEOUT = float(os.environ.get("PRECISION_FUZZ_CALL_TIMEOUT", "60"))


def _run(group, after, last):
    cmd = [sys.executable, "-m", "tests.fuzz.runner", group, "--last", str(last),
           "--call-timeout", str(CALL_TIMEOUT)]
    if after:
        cmd += ["--after", after]
    try:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        proc = subprocess.run(cmd, cwd=PACKAGE_PARENT, env=env, capture_output=True, text=True,
                              timeout=GROUP_TIMEOUT)
        return proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        return "timeout", out, err


@pytest.mark.parametrize("group", GROUPS)
def test_fuzz_group(group, tmp_path):
    last = tmp_path / "last_call.py"
    failures = []
    after = None
    names = [n for n, (g, _) in TARGETS.items() if g == group]
    while True:
        rc, out, err = _run(group, after, last)
        started = [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("START ")]
        finished = {line.split(" ", 1)[1] for line in out.splitlines()
                    if line.startswith(("ok ", "FAIL "))}
        failures += [line for line in out.splitlines() if line.startswith("FAIL ")]
        if rc in (0, 1) and out.rstrip().endswith("DONE"):
            if rc == 1:
                failures.append(out[-6000:] + err[-6000:])
            break
        # the subprocess died (signal, abort, a sanitizer's exit, a hang): report the call it
        # was running, go on with the group's next target
        current = started[-1] if started and started[-1] not in finished else None
        reproducer = last.read_text() if last.exists() else "(no call recorded)"
        failures.append(f"group {group}: the subprocess ended with {rc} in target {current}; "
                        f"the call it was running:\n{reproducer}\nstderr:\n{err[-4000:]}")
        if current is None or current == names[-1]:
            break
        after = current
    assert not failures, "\n".join(failures)
