"""Run the fuzz targets of one group in this process: ``python -m tests.fuzz.runner GROUP
[--after TARGET] [--last FILE] [--call-timeout SECONDS]``.

Each target is a hypothesis property over its strategy (tests/fuzz/targets.py) checked by
tests/fuzz/spec.py's contract, with the profile of HYPOTHESIS_PROFILE (tests/conftest.py).  Before
every call the reproducer of the call is written to ``--last``, so when the process dies (a
segfault, an abort, OpenMP exiting) the parent can print the case that killed it; a call that
runs longer than ``--call-timeout`` dumps every thread's stack and exits (a hang).  Prints
"START <target>" before and "FAIL <target>" / "ok <target>" after each target and "DONE" at the
end; exits 1 if any target failed.
"""
from __future__ import annotations

import argparse
import collections
import faulthandler
import os
import sys
import traceback

from hypothesis import given, settings

import tests.conftest  # noqa: F401  (registers and loads the hypothesis profiles)

from .spec import check_call
from .targets import TARGETS

VERBOSE = bool(os.environ.get("PRECISION_FUZZ_VERBOSE"))


def run_target(name, strategy, last_path, call_timeout) -> bool:
    outcomes = collections.Counter()
    messages = collections.Counter()

    @settings(database=None)
    @given(strategy)
    def prop(call):
        with open(last_path, "w") as f:
            f.write(f"# target {name}\n{call.reproducer()}\n")
        faulthandler.dump_traceback_later(call_timeout, exit=True)
        try:
            result = check_call(call)
            outcomes[type(result).__name__ if isinstance(result, Exception) else "returned"] += 1
            if isinstance(result, Exception) and VERBOSE:
                messages[f"{type(result).__name__}: {str(result)[:90]}"] += 1
        finally:
            faulthandler.cancel_dump_traceback_later()

    try:
        prop()
    except Exception:
        traceback.print_exc()
        return False
    finally:
        print(f"  calls of {name}: {dict(outcomes)}", flush=True)
        for message, count in messages.most_common(12):
            print(f"    {count:4d} {message}")
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("group")
    parser.add_argument("--after", default=None, help="skip the targets up to and including this")
    parser.add_argument("--last", default="/dev/null")
    parser.add_argument("--call-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    faulthandler.enable()
    names = [n for n, (group, _) in TARGETS.items() if group == args.group]
    if args.after is not None:
        names = names[names.index(args.after) + 1:]
    failed = []
    for name in names:
        print(f"START {name}", flush=True)
        ok = run_target(name, TARGETS[name][1], args.last, args.call_timeout)
        print(f"{'ok' if ok else 'FAIL'} {name}", flush=True)
        if not ok:
            failed.append(name)
    print("DONE", flush=True)    # the parent tells a finished run from a dead one by this line
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
