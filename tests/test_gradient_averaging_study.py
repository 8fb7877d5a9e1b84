"""The gradient-averaging study: smoke grid end to end, verdict computed from the data, key facts."""
import copy
import importlib
import csv
import math
from fractions import Fraction

import numpy as np
import pytest

from precision.study import SerialExecutor, Study, run_study
from precision.studies import gradient_averaging as study_package
from precision.studies.gradient_averaging import cells, model

# the package re-exports the hook report(), which shadows the module's name
study_report = importlib.import_module("precision.studies.gradient_averaging.report")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gradient-averaging")
    study = Study(study_package.NAME, study_package.grid("smoke"), cells.run_cell,
                  study_report.summarize, study_report.report, version="test",
                  verdict=study_report.verdict)
    results = run_study(study, out, executor=SerialExecutor(), resume=False)
    assert results.ok, (results.failures, results.report_error)
    return out, results


def test_smoke_grid_end_to_end(smoke):
    out, results = smoke
    text = (out / "report.md").read_text()
    assert text.startswith("# Gradient averaging across workers")
    for section in ("## 1.", "## 2.", "## 3.", "## 4.", "## 5."):
        assert section in text
    with open(out / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(study_package.grid("smoke"))
    assert {r["part"] for r in rows} == set(cells._PARTS)
    assert all(r["headline"] for r in rows)
    assert list((out / "plots").glob("*.png"))
    lines = study_report.verdict(results).splitlines()
    assert lines[0] == "Verdict (this run):"
    assert max(len(line) for line in lines) <= 100


def test_cli_finds_the_study():
    from precision.studies import load

    assert load("gradient-averaging") is study_package


def _mutated(results, part, change, **criteria):
    pairs = [(p, copy.deepcopy(r)) for p, r in results]
    for p, r in pairs:
        if p["part"] == part and all(p.get(k) == v for k, v in criteria.items()):
            change(r)
    return pairs


def test_verdict_sentences_follow_the_data(smoke):
    _, results = smoke
    before = study_report.verdict(list(results))

    def worse_post(r):
        r["median_rel_post"] = np.asarray(r["median_rel_post"]) * 10
    after = study_report.verdict(_mutated(results, "reduction", worse_post, format="float16",
                                          accum="float16", wire="float16", algorithm="ring"))
    assert before != after
    assert ("not reproduced" in after.replace("\n  ", " "))

    def overflow_later(r):
        r["overflow_k_post_ring"] = 999
    changed = study_report.verdict(_mutated(results, "reduction-facts", overflow_later))
    assert "ring 999" in changed.replace("\n  ", " ") and "ring 999" not in before.replace("\n  ", " ")

    def sgd_differs(r):
        r["update_differ"] = np.full_like(np.asarray(r["update_differ"], dtype=float), 0.5)
        r["param_relative"] = np.full_like(np.asarray(r["param_relative"], dtype=float), 1e-3)
    text = study_report.verdict(_mutated(results, "sum-vs-mean-sgd", sgd_differs, k=2)).replace("\n  ", " ")
    assert "bit-identical in 0 of" in text

    def accuracy_flip(r):
        r["test_accuracy"] = np.asarray(r["test_accuracy"], dtype=float) * 0 + 0.99
        r["rank0_logged_loss"] = np.asarray(r["rank0_logged_loss"], dtype=float) * 0 + 5.0
    flipped = study_report.verdict(_mutated(results, "large-batch", accuracy_flip, k=1))
    assert flipped != before


def test_findings_numbers_are_the_cells_numbers(smoke):
    _, results = smoke
    f = study_report.findings(results)
    for (fmt, accum, wire, algorithm), r in f["reduction"].items():
        if not fmt == accum == wire:
            continue               # _reduction_row reads the pure-format configurations
        row = study_report._reduction_row(f, fmt, algorithm, int(np.asarray(r["k"])[-1]))
        if row is not None:
            assert row["median_rel_post"] == float(np.asarray(r["median_rel_post"])[-1])


# ----------------------------------------------------------------------------- key facts

def test_reference_facts_float16_overflow_and_bfloat16_stagnation():
    r = cells.run_cell({"part": "reduction-facts", "algorithms": ["ring", "tree", "pairwise", "sequential"],
                        "k_max": 1024})
    # the reference (training-statistics.md §B): 256 workers holding 300 -> inf after the sum
    assert all(math.isinf(r[f"at256_post_{a}"]) for a in ("ring", "tree", "pairwise", "sequential"))
    assert r["at256_pre_tree"] == 300.0 and r["at256_pre_pairwise"] == 300.0
    assert all(r[f"overflow_k_pre_{a}"] == 0 for a in ("ring", "tree", "pairwise", "sequential"))
    # no order can overflow before the exact sum 300 k passes 65504 (rounding ties at 65520)
    assert all(r[f"overflow_k_post_{a}"] * 300 > 65504 for a in ("ring", "tree", "pairwise", "sequential"))
    ks = list(np.asarray(r["stagnation_k"]))
    i = ks.index(512)
    # bfloat16 (8 bits): 256 + 1 ties to 256, so a chain of ones stops at 256
    assert r["stagnation_sequential"][i] == 0.5 and r["stagnation_ring"][i] == 0.5
    assert r["stagnation_pairwise"][i] == 1.0 and r["stagnation_tree"][i] == 1.0
    assert r["underflow_subnormal_k_float16"] == 17          # 1e-3/17 < 2^-14 <= 1e-3/16


def test_addition_depth_and_gamma():
    for k in (2, 3, 8, 100, 1024):
        assert cells.addition_depth(k, "sequential") == k - 1
        assert cells.addition_depth(k, "ring") == k - 1
    for k in (2, 8, 1024):
        assert cells.addition_depth(k, "tree") == int(math.log2(k))
    assert cells.gamma(2, 2.0 ** -11) == pytest.approx(2 * 2.0 ** -11 / (1 - 2 * 2.0 ** -11))
    assert math.isinf(cells.gamma(4096, 2.0 ** -11))


def test_rounding_model_is_zero_for_exact_sums():
    # small integers: every partial sum and division by 2 is exact in float32, yet the model adds
    # ulp²/12 per operation -- it is an estimate of typical error, and must scale with the ulp
    x = np.ones((4, 3))
    from precision import formats

    var32 = cells.rounding_model_variance(x, "sequential", formats.format("float32"), 1.0, 4.0)
    var16 = cells.rounding_model_variance(x, "sequential", formats.format("float16"), 1.0, 4.0)
    assert np.all(var16 / var32 == pytest.approx(2.0 ** 26))


def test_k_worker_gradient_is_the_big_batch_gradient_in_float64():
    data = model.make_data(64, 8, 0)
    params = model.as_format(model.init_params(0), "float64")
    xa = model.augment(data.x, "float64")
    ref = model.gradient64(params, data.x, data.y)
    for k in (1, 2, 8):
        g = model.allreduce_mean(model.worker_gradients(params, xa, data.y, k)[0])
        assert np.allclose(g, ref, rtol=1e-12, atol=1e-15)


def test_data_are_exact_in_every_format():
    data = model.make_data(128, 8, 1)
    from precision import formats

    for name in ("float16", "bfloat16", "float32"):
        assert np.array_equal(formats.format(name).round(data.x).astype(np.float64), data.x)


def test_uneven_shards_weights():
    r = cells.run_cell({"part": "shards", "case": "sizes", "sizes": [3, 1], "n": 4, "seed": 0})
    assert list(r["weights"]) == [float(Fraction(1, 6)), 0.5] and r["global_weight"] == 0.25
    assert r["bias_relative"] > 0
    equal = cells.run_cell({"part": "shards", "case": "sizes", "sizes": [2, 2], "n": 4, "seed": 0})
    assert equal["bias_relative"] < 1e-15
    padded = cells.run_cell({"part": "shards", "case": "sampler", "k": 4, "n": 10, "seed": 0})
    assert padded["repeated_samples"] == 2                  # 10 -> 12: samples 0 and 1 twice


def test_adam_sum_with_k_eps_is_the_mean_for_power_of_two_k():
    # m and v scale by k and k² exactly, sqrt by k, R(k ε) = k R(ε): bit-identical runs
    r = cells.run_cell({"part": "sum-vs-mean-adam", "format": "float32", "k": 4, "batch": 4,
                        "grad_scale_log2": 0, "steps": 5, "n_train": 128, "seed": 0})
    assert r["control_relative"] == 0.0 and r["control_differ"] == 0.0
    tiny = cells.run_cell({"part": "sum-vs-mean-adam", "format": "float32", "k": 4, "batch": 4,
                           "grad_scale_log2": -27, "steps": 5, "n_train": 128, "seed": 0})
    assert tiny["median_eps_over_sqrt_v"] > 1 and tiny["sum_relative"] > 1e3 * r["sum_relative"]


def test_sgd_sum_and_mean_are_bit_identical_for_power_of_two_k():
    r = cells.run_cell({"part": "sum-vs-mean-sgd", "format": "float32", "k": 4, "batch": 4,
                        "steps": 5, "n_train": 128, "seed": 0})
    assert np.all(np.asarray(r["update_differ"]) == 0) and r["loss_mean"] == r["loss_sum"]


def test_lr_rules():
    k, b, ipe = 8, 16, 10
    base = cells.DEFAULTS["base_lr"]
    gradual = cells.lr_schedule("linear-gradual", k, b, ipe, 50, 2)
    assert gradual[0] == pytest.approx(base) and gradual[-1] == pytest.approx(k * base)
    assert np.all(np.diff(gradual) >= 0)
    constant = cells.lr_schedule("linear-constant", k, b, ipe, 50, 2)
    assert constant[19] == base and constant[20] == pytest.approx(k * base)
    assert cells.lr_schedule("sqrt", k, b, ipe, 5, 2)[0] == pytest.approx(math.sqrt(k) * base)
    assert np.all(cells.lr_schedule("none", k, b, ipe, 5, 2) == base)
    with pytest.raises(ValueError):
        cells.lr_schedule("cubic", k, b, ipe, 5, 2)


def test_unknown_part_is_refused():
    with pytest.raises(ValueError, match="unknown part"):
        cells.run_cell({"part": "nope"})
