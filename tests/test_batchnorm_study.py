"""The batch-norm statistics study: exact helpers, the stall table against an independent replay,
an end-to-end smoke run, and verdict sentences that follow the data."""
import copy
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import precision as pr
from precision.study import SerialExecutor, Study, run_study
from precision.studies import load
import importlib

from precision.studies.batchnorm_statistics import grid, parts, run_cell, theory
from precision.studies.batchnorm_statistics.exact import StreamSum, column_moments

# the package's ``report`` attribute is the hook function; the module holds the reference numbers
report = importlib.import_module("precision.studies.batchnorm_statistics.report")


# ----------------------------------------------------------------------------- exact helpers

finite = st.floats(allow_nan=False, allow_infinity=False, width=32)


@given(x=hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=6),
                    elements=st.one_of(finite, st.sampled_from([0.0, -0.0, 1e-45, 3e38]))))
def test_column_moments_equal_the_library_exact_moments(x):
    m, v = column_moments(x, as_fractions=True)
    em, ev = pr.exact.stats.moments(x, axis=0)
    assert list(m) == list(em)
    assert list(v) == list(ev)


@given(x=hnp.arrays(np.float64, (5, 3), elements=st.floats(-1e300, 1e300)))
def test_stream_sum_is_exact(x):
    s = StreamSum(3)
    s.add(x[:2])
    s.add(x[2:])
    for j in range(3):
        assert s.total[j] == sum(Fraction(v) for v in x[:, j].tolist())
    assert s.count == 5


# ----------------------------------------------------------------------------- part 3: stall table

def _replay(store, w_new, w_old):
    """The reference's arithmetic, op by op: float32 products and sum, one rounding into store."""
    e32 = pr.exact.emulate("float32")
    es = pr.exact.emulate(store)
    wn, wo = e32.round(w_new), e32.round(w_old)
    value, changed, k = 0.0, 0, 0
    while k - changed <= 16:
        k += 1
        new = es.round(e32.add(e32.mul(wo, value), e32.mul(wn, 1.0)))
        if new != value:
            value, changed = new, k
    return value, changed


@pytest.mark.parametrize("store", ["bfloat16", "float16", "float32"])
def test_stall_table_matches_an_independent_replay_and_the_reference(store):
    rows = [r for r in parts.stagnation(store, "smoke", 0)["rows"] if r["arith"] == "float32"]
    assert rows
    for r in rows:
        w_new = (1 - Fraction(r["momentum"])) if r["convention"] == "keras" else Fraction(r["momentum"])
        assert (r["value"], r["updates"]) == _replay(store, w_new, 1 - w_new)
        ref = report.REFERENCE_STALLS.get((store, r["alpha"]))
        if ref and r["convention"] == "torch":
            assert (r["value"], r["updates"]) == ref
    # the values the reference (training-statistics.md section A) prints
    if store == "bfloat16":
        assert _replay("bfloat16", Fraction(0.01), 1 - Fraction(0.01)) == (0.8046875, 146)


def test_theory_hand_values():
    # bf16 just below 1 has ulp 2^-8: threshold 1 - 2^-8 / 0.02 = 0.8046875
    assert theory.stall_threshold(0.01, 1.0, "bfloat16") == pytest.approx(0.8046875)
    assert theory.batch_of_two_output(2.0, 0.0) == 1.0
    assert theory.batch_of_two_output(2.0, 1.0) == pytest.approx(2 / np.sqrt(8))
    assert theory.biased_variance_bias(2) == -0.5
    assert theory.float16_square_overflow_count(4.0) == 4095
    # the cumulative average of a constant mean is exact; an EMA keeps (1-a)^t of its start
    mu, sigma = np.array([3.0]), np.array([1.0])
    assert theory.deterministic_mean_error(None, 50, mu, sigma, 0.0, 0.9) == pytest.approx(0, abs=1e-12)
    assert theory.deterministic_mean_error(0.5, 4, mu, sigma, 0.0, 0.9) == pytest.approx(3 / 16)


# ----------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bn-smoke")
    cells = grid(["bfloat16", "float32"], "smoke", 0)
    study = Study(name="batchnorm-statistics", cells=cells, run_cell=run_cell,
                  summarize=report.summarize, report=report.report, verdict=report.verdict)
    results = run_study(study, out, executor=SerialExecutor())
    return results, out


def test_smoke_runs_end_to_end(smoke):
    results, out = smoke
    assert results.ok, (results.failures, results.report_error)
    text = (out / "report.md").read_text()
    for part in range(1, 7):
        assert f"## {part}." in text
    for name in ("moving_average", "cumulative_freeze", "stagnation", "batch_of_two", "one_pass",
                 "tiny_batches"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 0
    assert (out / "summary.csv").exists()
    assert load("batchnorm-statistics").NAME == "batchnorm-statistics"


def test_verdict_fits_and_states_the_stall_table(smoke):
    results, _ = smoke
    text = report.verdict(results)
    assert all(len(line) <= 100 for line in text.splitlines())
    text = " ".join(text.split())      # sentences are wrapped at 100 columns
    assert "2 of 2 reference entries reproduced exactly" in text   # bfloat16: a = 0.1, 0.01


def _mutated(results, part, change):
    fake = copy.copy(results)
    fake.results = copy.deepcopy(results.results)
    for cid, r in fake.results.items():
        if fake.params[cid]["part"] == part:
            change(fake.params[cid], r)
    return fake


def test_verdict_follows_the_data(smoke):
    results, _ = smoke
    def verdict(res):
        return " ".join(report.verdict(res).split())

    before = verdict(results)

    def spoil_stall(params, r):
        if r["store"] == "bfloat16":
            for row in r["rows"]:
                if row["arith"] == "float32" and row["alpha"] == 0.01 and row["convention"] == "torch":
                    row["value"], row["updates"] = 0.8125, 150

    after = verdict(_mutated(results, "stagnation", spoil_stall))
    assert "1 of 2 reference entries reproduced exactly; different: bfloat16 a=0.01: 0.8125/150" in after
    assert after != before

    def worse_at_two(params, r):
        if params["batch"] == 2:
            r["test_acc_running"] = 0.125

    after = verdict(_mutated(results, "training", worse_at_two))
    assert "87.5% at 2" in after and "87.5% at 2" not in before

    def ratio_three(params, r):
        r["ratio"] = np.full_like(np.asarray(r["ratio"]), 3.0)

    after = verdict(_mutated(results, "small-batch", ratio_three))
    assert "Keras's = 3 (range 3-3" in after
