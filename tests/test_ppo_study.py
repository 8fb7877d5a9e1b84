"""The ppo-diagnostics study: recording real SB3 PPO updates, the smoke grid end to end, a verdict
computed from the data, Schulman's reference ratios."""
import copy
import csv
import importlib
import math

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")
pytest.importorskip("gymnasium")

from precision.rl import ENTROPY_ZERO_SIGMA  # noqa: E402
from precision.study import SerialExecutor, run_study  # noqa: E402
from precision.studies import ppo_diagnostics as study  # noqa: E402
from precision.studies.ppo_diagnostics import diagnostics, runs  # noqa: E402

# the module (the package exports its report() function under the same name)
report = importlib.import_module("precision.studies.ppo_diagnostics.report")


class _Args:
    size, formats, seed = "smoke", None, 0


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("ppo-smoke")
    results = run_study(study.build(_Args()), out, executor=SerialExecutor(), progress=False)
    return out, results


def test_smoke_grid_end_to_end(smoke):
    out, results = smoke
    assert results.ok, (results.failures, results.report_error)
    text = (out / "report.md").read_text(encoding="utf-8")
    assert text.startswith("# PPO diagnostics on real Stable-Baselines3 runs")
    for section in ("## 1. Negative entropy", "## 2. KL estimators", "## 3. Explained variance",
                    "## 4. Precision", "## 5. What these runs look like"):
        assert section in text
    for name in ("entropy", "kl", "explained_variance", "healthy_run", "k3_precision"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 1000
    with open(out / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["kind"] for r in rows] == ["ppo"] * 3 + ["schulman"] * 2 + ["k3-sweep"]
    verdict = study.verdict(results)
    assert max(len(line) for line in verdict.splitlines()) <= 100
    assert "Schulman" in verdict and "Explained variance" in verdict


def test_recorded_updates_reproduce_what_sb3_logged(smoke):
    """Our records are what SB3 saw: its float32 logs agree with the exact recomputation."""
    _, results = smoke
    for params, result in results.select(kind="ppo"):
        tr = result["traces"]
        assert result["updates"] >= 1 and tr["step"].size == result["updates"]
        np.testing.assert_allclose(tr["sb3_entropy_loss"], tr["sb3_entropy_loss_exact"],
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(tr["sb3_approx_kl"], tr["sb3_approx_kl_exact"],
                                   rtol=1e-3, atol=1e-7)
        np.testing.assert_allclose(tr["sb3_explained_variance"], tr["ev_sb3_exact"], atol=1e-5)
        # the exact diagnostics obey their definitions
        assert np.all(tr["k3_exact"] >= 0) and np.all(tr["kl_exact"] >= 0)
        if result["kind_of_policy"] == "gaussian":
            np.testing.assert_allclose(
                tr["entropy_exact"],
                tr["action_dims"] * (0.5 * math.log(2 * math.pi * math.e)
                                     + np.log(tr["sigma_geometric_mean"])), rtol=1e-6, atol=1e-9)


def test_verdict_is_computed_from_the_data(smoke):
    """Change the measurements and the sentences change with them."""
    _, results = smoke
    text = " ".join(study.verdict(results).split())
    assert "stayed positive" in text          # a smoke run is far too short to cross zero

    shifted = copy.copy(results)
    shifted.results = {}
    for cid, r in results.results.items():
        p = results.params[cid]
        if p["kind"] == "ppo" and p["run"] == "pendulum-gsde":
            r = copy.deepcopy(r)
            tr = r["traces"]
            tr["sigma_geometric_mean"] = np.full_like(tr["sigma_geometric_mean"], 0.2)
            tr["entropy_exact"] = 0.5 * math.log(2 * math.pi * math.e) + np.log(
                tr["sigma_geometric_mean"])
            r["near_constant"] = dict(r["near_constant"], sb3=[-123456.0] * len(
                r["near_constant"]["scales"]))
        if p["kind"] == "k3-sweep":
            r = dict(r, f32_naive_single=[7.0] * len(r["deltas"]))
        shifted.results[cid] = r
    changed = " ".join(study.verdict(shifted).split())
    assert changed != text
    assert f"went negative at step {int(shifted_step(shifted))}" in changed
    assert "fell to 0.2 < 1/√(2πe)" in changed
    assert "SB3 reports -1.23e+05" in changed
    assert "has relative error 7 / 7 / 7" in changed


def shifted_step(results):
    for params, r in results.select(kind="ppo", run="pendulum-gsde"):
        return r["traces"]["step"][0]


def test_entropy_facts_find_the_crossing():
    sigma = np.array([0.5, 0.3, 0.25, 0.24, 0.2])
    h = 0.5 * math.log(2 * math.pi * math.e) + np.log(sigma)
    tr = {"step": np.arange(1, 6) * 100.0, "entropy_exact": h, "sigma_geometric_mean": sigma,
          "sb3_entropy_loss": -h, "sb3_entropy_loss_exact": -h}
    facts = report.entropy_facts({"traces": tr})
    assert facts["crossing_step"] == 400 and facts["crossing_sigma"] == 0.24
    assert facts["agree"] == 5 and facts["negative_updates"] == 2
    assert sigma[3] < ENTROPY_ZERO_SIGMA < sigma[2]


@pytest.mark.parametrize("mu", [0.1, 1.0])
def test_schulman_closed_form_matches_his_numbers_and_the_monte_carlo(mu):
    """std/KL: 20 / 1.42 / 1.42 and k2 bias 0.25 % (mu = 0.1); 2 / 1.73 / 1.70 and 25 % (mu = 1),
    as printed in joschu.net/blog/kl-approx.html (to their 3 digits)."""
    ref = diagnostics.SCHULMAN_REFERENCE[mu]
    closed = diagnostics.schulman_closed_form(mu)
    for est in ("k1", "k2", "k3"):
        assert closed[est] == pytest.approx(ref[est], abs=0.006)
    assert closed["k2_bias"] == pytest.approx(ref["k2_bias"], rel=1e-12)
    mc = diagnostics.schulman_monte_carlo(mu, 200_000, seed=3)
    for est in ("k1", "k2", "k3"):
        assert abs(mc[f"{est}_std_over_kl"] - closed[est]) < 5 * mc[f"{est}_std_over_kl_se"]
    assert abs(mc["k1_bias"]) < 5 * mc["k1_bias_se"] and abs(mc["k3_bias"]) < 5 * mc["k3_bias_se"]


def test_k3_sweep_shows_the_naive_cancellation_in_float32():
    sweep = diagnostics.k3_sweep(["float32"], deltas=(1e-3, 1e-4), batch=16)
    assert sweep["f32_naive_single"][1] > 1.0            # x = 1e-4: no correct digit left
    assert max(sweep["f32_expm1_single"]) < 2 ** -23      # within an ulp


def test_run_is_deterministic_and_recorded_shapes():
    a = runs.run_ppo("cartpole", 0, 64, overrides={"n_steps": 64, "n_epochs": 1})
    b = runs.run_ppo("cartpole", 0, 64, overrides={"n_steps": 64, "n_epochs": 1})
    assert len(a) == len(b) == 1
    rec = a[0]
    assert rec["kind"] == "categorical" and rec["old"][0].shape == (64, 2)
    assert len(rec["minibatches"]) == rec["minibatches_per_epoch"] == 1
    for key in ("old_logp", "new_logp", "values", "returns"):
        np.testing.assert_array_equal(rec[key], b[0][key])
    assert rec["logged"]["approx_kl"] == b[0]["logged"]["approx_kl"]


def test_bad_run_configuration_is_rejected():
    with pytest.raises(ValueError, match="unknown run"):
        runs.hyperparameters("hopper")
    with pytest.raises(ValueError, match="unknown hyperparameters"):
        runs.hyperparameters("cartpole", {"n_stpes": 3})
    with pytest.raises(ValueError, match="unknown cell kind"):
        study.run_cell({"kind": "sac"})


def test_grid_sizes_and_formats():
    quick = study.grid("quick")
    assert sum(c["kind"] == "ppo" for c in quick) == 3
    assert sum(c["kind"] == "ppo" for c in study.grid("full")) == 9
    only = study.grid("smoke", formats=["float32"])
    assert all(c["formats"] == ["float32"] for c in only if "formats" in c)
