"""The soft-target stall study: exact-excess evaluator, theory, an end-to-end smoke run, determinism."""
import csv
import math

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import precision as pr
from precision.study import SerialExecutor, Study, run_study
from precision.study import store as study_store
from precision.studies.soft_target import theory
from precision.exact.double_double import excess_kl_rows
from precision.studies.soft_target.problems import make_problem
from precision.studies.soft_target.train import run_cell, summarize

LINEAR_PROBLEMS = ["bias-only", "linear", "linear-noisy"]


# ----------------------------------------------------------------------------- exact excess

def _kl_mp(p_star, delta, dps=80):
    with mpmath.workdps(dps):
        total = []
        for ps, d in zip(p_star.tolist(), delta.tolist()):
            ps = [mpmath.mpf(v) for v in ps]
            s = mpmath.fsum(ps)
            ps = [v / s for v in ps]
            z = [mpmath.mpf(v) for v in d]
            lse = mpmath.log(mpmath.fsum(p * mpmath.exp(v) for p, v in zip(ps, z)))
            total.append(lse - mpmath.fsum(p * v for p, v in zip(ps, z)))
        return total


@settings(max_examples=30)
@given(seed=st.integers(0, 2**32 - 1), scale_exp=st.integers(-17, 1))
def test_kl_rows_match_mpmath(seed, scale_exp):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(4), size=3)
    # (large row shifts are removed exactly before this function: Problem.excess, tested below)
    delta = rng.normal(size=(3, 4)) * 10.0 ** scale_exp
    ours = excess_kl_rows(p / p.sum(axis=1, keepdims=True), delta)
    exact = _kl_mp(p, delta)
    for a, b in zip(ours, exact):
        assert a == pytest.approx(float(b), rel=1e-12, abs=0.0)


@pytest.mark.parametrize("name", LINEAR_PROBLEMS)
@settings(max_examples=6)
@given(seed=st.integers(0, 2**32 - 1), scale_exp=st.integers(-16, -1))
def test_excess_matches_mpmath_including_tiny_excess(name, seed, scale_exp):
    problem = make_problem(name, 0)
    rng = np.random.default_rng(seed)
    w = problem.w_star + rng.normal(size=problem.w_star.shape) * 10.0 ** scale_exp
    ours = problem.excess({"w": w})
    exact = problem.excess_mp({"w": w}, dps=80)
    assert exact > 0
    assert ours == pytest.approx(float(exact), rel=1e-12)


def test_naive_difference_cancels_where_the_evaluator_does_not():
    problem = make_problem("linear-noisy", 0)
    w = problem.w_star + 1e-12 * np.random.default_rng(3).normal(size=problem.w_star.shape)
    exact = float(problem.excess_mp({"w": w}, dps=80))
    z = problem.x @ w
    lse = np.log(np.exp(z).sum(axis=1))
    naive = float(np.mean(np.sum(problem.targets * (lse[:, None] - z), axis=1))) - problem.min_loss64
    assert abs(naive - exact) > 100 * exact          # float64 CE − L* is noise at this excess
    assert problem.excess({"w": w}) == pytest.approx(exact, rel=1e-12)


def test_problem_data_is_exact_in_every_format():
    for name in ("bias-only", "linear", "linear-noisy", "linear-ill-conditioned"):
        problem = make_problem(name, 0, 1e4 if name == "linear-ill-conditioned" else None)
        assert np.allclose(problem.targets.sum(axis=1), 1.0, rtol=0, atol=0)
        for fmt in pr.FORMATS:
            for arr in (problem.x, problem.targets, problem.init["w"]):
                assert np.array_equal(fmt.round(arr).astype(np.float64), arr)
        assert problem.info["optimum_gradient_residual"] < 1e-40


# ----------------------------------------------------------------------------- theory

def test_loss_resolution_and_freeze_prediction():
    assert theory.loss_resolution(1.0266190072458234, "float32") == 2.0 ** -23
    assert theory.loss_resolution(0.75, "bfloat16") == 2.0 ** -8
    assert theory.predicted_excess_at_loss_freeze(1.5, "float16") == 1.5 * 2.0 ** -11


def test_swamping_floor_hand_case():
    # one parameter w* = 1.5 in float16: ulp = 2^-10, s = ulp/(2 lr) = 2^-11 (lr = 1); H = [[1]]
    assert theory.swamping_floor(np.eye(1), np.array([1.5]), 1.0, "float16") == pytest.approx(
        0.5 * 2.0 ** -22 / 3)
    # momentum 0.75 shrinks the threshold by 4 (the floor by 16); lr = 2 by another 2 (4)
    assert theory.swamping_floor(np.eye(1), np.array([1.5]), 2.0, "float16", momentum=0.75) == \
        pytest.approx(0.5 * 2.0 ** -22 / 3 / 64)


def test_gradient_and_representation_floors_hand_case():
    # bias-only, two classes at p* = (1/2, 1/2): H = 1/4 [[1, -1], [-1, 1]], H⁺ = [[1, -1], [-1, 1]]
    hessian = 0.25 * np.array([[1.0, -1.0], [-1.0, 1.0]])
    x = np.ones((8, 1))
    p_star = np.full((8, 2), 0.5)
    # float16: ulp(1/2) = 2^-11, error variance 2^-22/12 per class, E = ½ (1 + 1) 2^-22/12
    assert theory.gradient_resolution_floor(x, p_star, hessian, "float16", shared_prediction=True) == \
        pytest.approx(2.0 ** -22 / 12)
    # independent rows average: variance / N
    assert theory.gradient_resolution_floor(x, p_star, hessian, "float16", shared_prediction=False) == \
        pytest.approx(2.0 ** -22 / 12 / 8)
    # rounding w* = (1.5, 1.5) in float16: ½ Σ H_ii ulp²/12 = ½ · 2 · ¼ · 2^-20/12
    assert theory.representation_floor(hessian, np.array([1.5, 1.5]), "float16") == \
        pytest.approx(2.0 ** -22 / 12)


# ----------------------------------------------------------------------------- runs

def _cell(**kw):
    cell = {"problem": "bias-only", "condition": None, "format": "float32", "accumulate": "float32",
            "optimizer": "gd", "state_format": "float32", "variant": "plain", "seed": 0,
            "iterations": 120, "size": "quick"}
    cell.update(kw)
    return cell


def test_cell_is_deterministic():
    params = _cell(format="bfloat16", accumulate="float32", state_format="bfloat16", iterations=80)
    first = study_store.encode(run_cell(dict(params)))
    second = study_store.encode(run_cell(dict(params)))
    assert first == second


def test_gd_float32_bias_only_freezes_near_Hu_and_floors_at_u_squared():
    result = run_cell(_cell(iterations=400))
    u = 2.0 ** -24
    assert result["loss_freeze_iteration"] is not None
    assert 0.01 < result["excess_at_loss_freeze"] / (result["min_loss"] * u) < 100
    assert result["floor_status"] == "plateau"
    assert result["excess_floor"] < 10 * u * u           # far below the loss-resolution floor
    assert np.all(np.diff(result["eval_iterations"]) > 0)


def test_smoke_tiny_grid_end_to_end(tmp_path):
    from precision.studies import soft_target as soft_target_stall

    cells = [_cell(iterations=60), _cell(optimizer="lbfgs", state_format="float64", iterations=20),
             _cell(problem="linear", format="float16", accumulate="float16", state_format="float16",
                   iterations=60),
             _cell(optimizer="adam", format="bfloat16", accumulate="bfloat16", state_format="float32",
                   iterations=40),
             _cell(problem="mlp", format="float16", accumulate="float16", state_format="float16",
                   iterations=40),
             _cell(problem="linear", optimizer="adam", iterations=40),
             _cell(problem="linear", optimizer="adam", variant="eps-stable", iterations=40)]
    study = Study("soft-target-stall", cells, run_cell, summarize, soft_target_stall.report,
                  version="test")
    results = run_study(study, tmp_path, executor=SerialExecutor(), resume=False)
    assert results.ok, (results.failures, results.report_error)
    assert (tmp_path / "report.md").read_text().startswith("# Where soft-target training stalls")
    with open(tmp_path / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(cells)
    required = {"problem", "format", "accumulate", "optimizer", "state_format", "loss_freeze_iteration",
                "excess_at_loss_freeze", "excess_floor", "floor_iteration", "loss_resolution",
                "unit_roundoff", "predicted_floor", "predicted_excess_at_loss_freeze", "floor_ratio",
                "freeze_ratio", "predicted_swamping_floor", "predicted_gradient_floor"}
    assert required <= set(rows[0])
    assert float(rows[0]["unit_roundoff"]) == 2.0 ** -24
    assert [r["problem"] for r in rows].count("mlp") == 1
    assert list((tmp_path / "plots").glob("*.png"))
    report = (tmp_path / "report.md").read_text()
    assert "## Adam: attribution of the rebound" in report
    assert (tmp_path / "plots" / "adam_attribution.png").stat().st_size > 1000


def test_grid_declares_every_problem_and_optimizer():
    from precision.studies import soft_target as soft_target_stall

    everything = soft_target_stall.grid()
    quick = [c for c in everything if "part" not in c]
    parts = {c.get("part") for c in everything}
    assert parts == {None, "symptoms", "mechanisms"}
    symptom = [c for c in everything if c.get("part") == "symptoms"]
    assert {c["experiment"] for c in symptom} == {"models", "lbfgs", "targets", "remedies"}
    assert {c["model"] for c in symptom if c["experiment"] == "models"} == {"bias", "linear", "mlp"}
    assert {c["optimizer"] for c in symptom if c["experiment"] == "lbfgs"} == {
        "scipy-default", "format-state", "scipy-ftol0"}
    mech = [c for c in everything if c.get("part") == "mechanisms"]
    assert {c["lr_lambda"] for c in mech if "lr_lambda" in c} == {0.25, 0.5, 1.0, 1.5}
    assert {c["eps_ratio"] for c in mech if "eps_ratio" in c} == {20.0, 30.0, 45.0, 60.0}
    assert {(c["format"], c["state_format"], c["adam_lr"]) for c in mech if "adam_lr" in c} >= {
        (f, s, lr) for f in ("float16", "bfloat16", "float32") for s in (f, "float32", "float64")
        for lr in (1e-3, 1e-2)}
    assert {c["seed"] for c in soft_target_stall.grid(full=True)} >= {0, 1, 2, 3, 4}
    assert {c["problem"] for c in quick} == {"bias-only", "linear", "linear-noisy",
                                             "linear-ill-conditioned", "mlp"}
    mlp = {(c["format"], c["optimizer"], c["state_format"]) for c in quick if c["problem"] == "mlp"}
    for fmt in ("float16", "bfloat16", "float32", "float64"):
        assert {(fmt, "gd", fmt), (fmt, "lbfgs", "float64")} <= mlp
        assert (fmt, "adam", "float32" if fmt != "float64" else "float64") in mlp
    assert {c["optimizer"] for c in quick} == {"gd", "momentum", "adam", "lbfgs"}
    assert {c["variant"] for c in quick} == {"plain", "exact-gradient", "master-f64", "eps-stable"}
    # the quick grid can state the Adam and MLP attribution findings
    adam_variants = {(c["problem"], c["format"], c["variant"]) for c in quick if c["optimizer"] == "adam"}
    for problem in ("linear", "mlp"):
        assert {(problem, "float32", v) for v in ("plain", "exact-gradient", "master-f64", "eps-stable")} \
            <= adam_variants
        assert {(problem, "float64", "plain"), (problem, "float64", "eps-stable")} <= adam_variants
    assert {c["format"] for c in quick if c["problem"] == "mlp" and c["variant"] == "master-f64"
            and c["optimizer"] == "gd"} == {"float16", "bfloat16", "float32"}
    only = soft_target_stall.grid(formats=["float32"])
    assert {c["format"] for c in only} == {"float32"} and not any("part" in c and c["part"] == "symptoms"
                                                                  for c in only)
    assert len(soft_target_stall.grid(full=True)) > len(quick)


def test_post_numbers():
    from precision.studies.soft_target.report import post_numbers

    numbers = post_numbers()
    exact_h = float(numbers["exact"]["entropy"])
    assert abs(exact_h - 1.0266190072458234) < float(numbers["exact"]["entropy_uncertainty"])
    assert numbers["formats"]["float64"]["entropy"] == pytest.approx(exact_h, rel=4e-16)
    assert numbers["formats"]["float32"]["ulp_at_entropy"] == 2.0 ** -23
    assert math.isclose(float(numbers["quoted"]["kl"]), 1.026805558049737 - 1.0266190072458234,
                        rel_tol=1e-12)


# ----------------------------------------------------------------------------- the realizable MLP

def _mlp_perturbed(problem, rng, scale):
    return {k: v + rng.normal(size=v.shape) * scale for k, v in problem.mlp_star.items()}


@settings(max_examples=8)
@given(seed=st.integers(0, 2**32 - 1), scale_exp=st.integers(-16, -1))
def test_mlp_excess_matches_mpmath_including_tiny_excess(seed, scale_exp):
    problem = make_problem("mlp", 0)
    params = _mlp_perturbed(problem, np.random.default_rng(seed), 10.0 ** scale_exp)
    exact = problem.excess_mp(params, dps=80)       # mean CE in mpmath − mean H(t) (OPT_DPS digits)
    assert exact > 0
    assert problem.excess(params) == pytest.approx(float(exact), rel=1e-12)


def test_mlp_excess_of_the_start_and_of_format_parameters():
    problem = make_problem("mlp", 0)
    assert problem.excess(problem.init) == pytest.approx(float(problem.excess_mp(problem.init)),
                                                         rel=1e-12)
    assert problem.excess(problem.init) > 0.01       # the run has a long way to go
    for fmt in pr.FORMATS:                            # the teacher rounded to each format
        params = {k: fmt.round(v) for k, v in problem.mlp_star.items()}
        exact = float(problem.excess_mp(params, dps=80))
        # rounding costs O(u²): of the order of the representation prediction ½ Σ H_ii ulp(θ*_i)²/12
        assert 0 < exact < 20 * theory.representation_floor(problem.hessian, problem.w_star, fmt)
        assert problem.excess(params) == pytest.approx(exact, rel=1e-12)


def test_mlp_problem_is_realizable_with_known_minimum():
    problem = make_problem("mlp", 0)
    # data, targets and start exact in every format; targets k/64 summing to exactly 1
    assert np.array_equal(problem.targets.sum(axis=1), np.ones(problem.n_rows))
    assert np.array_equal(problem.targets * 64, np.round(problem.targets * 64))
    for fmt in pr.FORMATS:
        for arr in (problem.x, problem.targets, *problem.init.values()):
            assert np.array_equal(fmt.round(arr).astype(np.float64), arr)
    # min CE = mean entropy of the targets, recomputed independently
    with mpmath.workdps(60):
        rows = [-mpmath.fsum(mpmath.mpf(v) * mpmath.log(mpmath.mpf(v)) for v in row)
                for row in problem.targets.tolist()]
        assert abs(mpmath.fsum(rows) / problem.n_rows - problem.min_loss) < mpmath.mpf(10) ** -55
        # the teacher (its second layer at 60 digits) reproduces the targets: CE(θ*) = min CE
        w1, b1 = problem.mlp_star["w1"], problem.mlp_star["b1"]
        w2, b2 = problem.mlp_star_mp["w2"], problem.mlp_star_mp["b2"]
        worst = mpmath.mpf(0)
        for xr, tr in zip(problem.x.tolist(), problem.targets.tolist()):
            pre = [mpmath.fsum(mpmath.mpf(xj) * mpmath.mpf(w1[j, k]) for j, xj in enumerate(xr))
                   + mpmath.mpf(b1[k]) for k in range(w1.shape[1])]
            assert min(abs(v) for v in pre) >= 0.125          # no ReLU kink at the optimum
            hid = [max(v, 0) for v in pre]
            z = [mpmath.fsum(h * w2[k][c] for k, h in enumerate(hid)) + b2[c] for c in range(len(b2))]
            s = mpmath.fsum(mpmath.exp(v) for v in z)
            worst = max(worst, max(abs(mpmath.exp(v) / s - mpmath.mpf(t)) for v, t in zip(z, tr)))
        assert worst < mpmath.mpf(10) ** -50
    assert problem.excess(problem.mlp_star) < 1e-28   # float64 rounding of W2, b2 only


def test_mlp_kernel_gradient_matches_exact():
    from precision.studies.soft_target.train import _Model

    problem = make_problem("mlp", 0)
    params = _mlp_perturbed(problem, np.random.default_rng(1), 0.05)
    exact = np.array([float(v) for v in problem.gradient_mp(params)])
    f64 = pr.float64
    loss, grads = _Model(problem, f64, f64).loss_and_grads({k: v.copy() for k, v in params.items()})
    ours = np.concatenate([np.ravel(grads[k]) for k in ("w1", "b1", "w2", "b2")])
    assert np.max(np.abs(ours - exact)) < 1e-15 * np.max(np.abs(exact)) * 10
    assert float(loss) == pytest.approx(float(problem.loss_mp(params)), rel=1e-15)
    from precision.studies.soft_target.problems import mlp_gradient64
    g64 = mlp_gradient64(problem.x, problem.targets, params)
    assert np.allclose(np.concatenate([np.ravel(g64[k]) for k in ("w1", "b1", "w2", "b2")]), exact,
                       rtol=0, atol=1e-14 * np.max(np.abs(exact)))


def test_mlp_smoke_cells():
    gd = run_cell(_cell(problem="mlp", format="bfloat16", accumulate="bfloat16",
                        state_format="bfloat16", iterations=300))
    excess = np.asarray(gd["exact_excess"])
    assert np.isfinite(excess).all() and excess[-1] < excess[0] / 10
    assert gd["loss_freeze_iteration"] is not None
    assert math.isfinite(gd["predicted_swamping_floor"]) and math.isfinite(gd["predicted_floor"])
    assert len(gd["grad_rel_error"]) > 0
    lbfgs = run_cell(_cell(problem="mlp", optimizer="lbfgs", state_format="float64", iterations=30))
    assert lbfgs["exact_excess"][-1] < lbfgs["exact_excess"][0]
    row = summarize(_cell(problem="mlp"), gd)
    assert row["excess_floor"] == gd["excess_floor"]


# ----------------------------------------------------------------------------- Adam attribution

def test_rebound_summary_on_synthetic_traces():
    from precision.studies.soft_target.train import REBOUND_FACTOR, rebound_summary

    its = np.arange(0, 80, 10)
    falling = rebound_summary(its, [1.0, 1e-2, 1e-4, 1e-6, 1e-7, 1e-7, 2e-7, 5e-7])
    assert falling["rebound_iteration"] is None
    assert falling["min_excess"] == 1e-7 and falling["min_excess_iteration"] == 40
    assert falling["max_excess_after_min"] == 5e-7
    spike = [1.0, 1e-2, 1e-6, 1e-8, 1e-8 * REBOUND_FACTOR, 1e-8 * REBOUND_FACTOR * 1.01, 1e-3, 1e-9]
    out = rebound_summary(its, spike)
    assert out["rebound_iteration"] == 50          # strictly above 100× the running minimum
    assert out["min_excess"] == 1e-9 and out["min_excess_iteration"] == 70
    blown = rebound_summary(its[:4], [1.0, 1e-3, math.inf, math.nan])
    assert blown["rebound_iteration"] == 20 and blown["min_excess"] == 1e-3
    assert blown["max_excess_after_min"] == math.inf
    nothing = rebound_summary(its[:2], [math.nan, math.nan])
    assert nothing["rebound_iteration"] is None and math.isnan(nothing["min_excess"])


def test_first_upward_crossing_skips_the_start_up_transient():
    from precision.studies.soft_target.train import first_upward_crossing

    its = [1, 2, 3, 4, 5, 6]
    assert first_upward_crossing(its, [200, 50, 20, 30, 39, 41], 38) == 5
    assert first_upward_crossing(its, [20, 30, 37, 38, 38, 38], 38) is None   # at the limit: stable
    assert first_upward_crossing(its, [40, 41, 42, 43, 44, 45], 38) is None   # never below


def test_adam_stability_threshold_matches_the_recurrence():
    """x_{t+1} = (1 + β1 − (1 − β1) a) x_t − β1 x_{t−1} stays bounded just below A_c, grows above."""
    from precision.studies.soft_target.train import adam_stability_threshold

    beta1 = 0.9
    limit = adam_stability_threshold(beta1)
    assert limit == pytest.approx(38.0)

    def amplitude(a, steps=4000):
        prev, x = 1.0, 1.0
        for _ in range(steps):
            prev, x = x, (1 + beta1 - (1 - beta1) * a) * x - beta1 * prev
        return abs(x)

    assert amplitude(limit * 0.99) < 1.0
    assert amplitude(limit * 1.01) > 1e3


@pytest.mark.parametrize("problem", ["linear", "mlp"])
def test_stable_adam_eps_caps_the_preconditioned_sharpness(problem):
    from precision.studies.soft_target.train import DEFAULTS, stable_adam_eps

    prob = make_problem(problem, 0)
    lr = DEFAULTS["adam_lr"]
    eps = stable_adam_eps(prob, lr)
    cap = lr * prob.info["hessian_max_eigenvalue"] / eps
    assert math.log2(eps).is_integer()
    assert DEFAULTS["adam_stable_cap"] / 2 < cap <= DEFAULTS["adam_stable_cap"]


def test_adam_rebounds_in_float64_when_its_sharpness_crosses_the_limit_and_eps_stable_does_not():
    """The study's Adam finding on the linear problem (float64: no rounding to blame)."""
    plain = run_cell(_cell(problem="linear", format="float64", accumulate="float64",
                           state_format="float64", optimizer="adam", iterations=2000))
    stable = run_cell(_cell(problem="linear", format="float64", accumulate="float64",
                            state_format="float64", optimizer="adam", variant="eps-stable",
                            iterations=2000))
    u2 = 2.0 ** -106
    assert plain["min_excess"] < 10 * u2                       # it got to the u² scale first
    assert plain["rebound_iteration"] is not None
    assert plain["max_excess_after_min"] > 1e6 * plain["min_excess"]
    assert plain["adam_unstable_iteration"] is not None
    assert plain["adam_unstable_iteration"] <= plain["rebound_iteration"]
    sharp = np.asarray(plain["adam_sharpness"])
    its = np.asarray(plain["adam_sharpness_iterations"])
    assert np.all(sharp[(its > 100) & (its < plain["adam_unstable_iteration"])] <= 38.0)
    assert stable["rebound_iteration"] is None and stable["adam_unstable_iteration"] is None
    assert np.nanmax(stable["adam_sharpness"]) <= 4.0
    assert stable["min_excess"] < 10 * u2
    assert stable["adam_eps"] > 1e-8 and plain["adam_eps"] == 1e-8


def test_master_f64_adam_runs_in_float64_and_variants_are_validated():
    cells = {v: run_cell(_cell(problem="linear", format="float16", accumulate="float16",
                               state_format="float16", optimizer="adam", variant=v, iterations=30))
             for v in ("plain", "master-f64")}
    # float16 state: ε = 1e-8 is 0 there and the first step divides 0 by 0 somewhere
    assert cells["plain"]["blew_up_iteration"] is not None
    master = cells["master-f64"]          # float64 weights and state, the float16 gradient
    assert master["blew_up_iteration"] is None and np.isfinite(master["exact_excess"]).all()
    assert master["exact_excess"][-1] < master["exact_excess"][0] / 10
    with pytest.raises(ValueError, match="Adam only"):
        run_cell(_cell(problem="linear", variant="eps-stable", iterations=5))
    with pytest.raises(ValueError, match="unknown variant"):
        run_cell(_cell(problem="linear", variant="exact", iterations=5))
    with pytest.raises(ValueError, match="first-order"):
        run_cell(_cell(problem="linear", optimizer="lbfgs", variant="master-f64", iterations=5))


def test_gradient_error_floor_hand_case():
    hessian = np.diag([2.0, 0.5, 0.0])                       # H⁺ = diag(1/2, 2, 0)
    errors = np.array([[1.0, 1.0, 5.0], [2.0, 0.0, -3.0]])
    # ½ mean(eᵀH⁺e) = ½ · ((0.5 + 2) + 2) / 2; the null direction does not count
    assert theory.gradient_error_floor(errors, hessian) == pytest.approx(0.5 * (2.5 + 2.0) / 2)


def test_mlp_gradient_resolution_floor_shared_errors_scale_with_the_group_size():
    rng = np.random.default_rng(3)
    n_groups, per_group, c, p = 3, 4, 3, 5
    base = rng.normal(size=(n_groups, c, p))
    jac = np.repeat(base, per_group, axis=0)                 # identical rows within a group
    groups = np.repeat(np.arange(n_groups), per_group)
    a = rng.normal(size=(p, p))
    hessian = a @ a.T
    p_star = np.repeat(rng.dirichlet(np.ones(c), size=n_groups), per_group, axis=0)
    independent = theory.mlp_gradient_resolution_floor(jac, p_star, hessian, "float32")
    shared = theory.mlp_gradient_resolution_floor(jac, p_star, hessian, "float32", groups=groups)
    assert shared == pytest.approx(per_group * independent, rel=1e-10)
    # the hand formula for the independent case
    n = jac.shape[0]
    var = theory._ulp(p_star, "float32") ** 2 / 12
    h_pinv = np.linalg.inv(hessian)
    expected = 0.5 * sum(var[r, k] * jac[r, k] @ h_pinv @ jac[r, k] for r in range(n) for k in range(c)) / n**2
    assert independent == pytest.approx(expected, rel=1e-10)


def test_mlp_gd_cell_predicts_a_gradient_floor_below_swamping():
    from precision.studies.soft_target.problems import mlp_groups

    prob = make_problem("mlp", 0)
    groups = mlp_groups(prob)
    assert len(set(groups.tolist())) == prob.info["groups"]
    assert all(np.all(prob.targets[groups == g] == prob.targets[groups == g][0]) for g in set(groups))
    result = run_cell(_cell(problem="mlp", format="float16", accumulate="float16",
                            state_format="float16", iterations=5))
    grad, swamp = result["predicted_gradient_floor"], result["predicted_swamping_floor"]
    assert math.isfinite(grad) and 0 < grad < swamp / 10
    assert result["predicted_floor"] == max(swamp, grad, result["predicted_representation_floor"])
    # the measured-error estimate is of the order of the p-rounding one, larger (forward errors)
    assert result["predicted_gradient_floor_p_independent"] < result["predicted_gradient_floor_p_shared"]
    assert result["predicted_gradient_floor_p_shared"] / 100 < grad < 100 * result["predicted_gradient_floor_p_shared"]


def test_master_f64_rows_are_compared_with_the_gradient_floor():
    from precision.studies.soft_target.train import applicable_floor

    result = {"predicted_floor": 1e-5, "predicted_gradient_floor": 1e-8, "excess_floor": 2e-8,
              "unit_roundoff": 2.0 ** -11}
    master = _cell(problem="mlp", variant="master-f64")
    assert applicable_floor(master, result) == 1e-8
    assert applicable_floor(_cell(problem="mlp"), result) == 1e-5
    assert applicable_floor(_cell(optimizer="adam", variant="master-f64"), result) == 1e-5
    row = summarize(master, result)
    assert row["predicted_floor"] == 1e-8 and row["floor_ratio"] == pytest.approx(2.0)


def test_rebound_ignores_wandering_below_u_squared_and_reports_the_sharpness_there():
    from precision.studies.soft_target.train import rebound_of, rebound_summary

    u = 2.0 ** -24
    its = np.array([1, 2, 3, 4, 5])
    wander = [1e-3, 1e-18, 1e-16, 2e-15, 3e-15]           # all below 100 u² ≈ 3.6e-13
    assert rebound_summary(its, wander)["rebound_iteration"] == 4       # without the u² floor
    assert rebound_summary(its, wander, u)["rebound_iteration"] is None
    result = {"eval_iterations": its, "exact_excess": [1e-3, 1e-18, 1e-16, 1e-9, 1e-7],
              "unit_roundoff": u, "adam_sharpness_iterations": its,
              "adam_sharpness": np.array([200.0, 20.0, 30.0, 37.5, 40.0])}
    out = rebound_of(result)
    assert out["rebound_iteration"] == 4 and out["sharpness_at_rebound"] == 37.5
    assert math.isnan(rebound_of({**result, "adam_sharpness": []})["sharpness_at_rebound"])


# ----------------------------------------------------------------------------- the verdict is computed

def _synthetic(problem="linear", fmt="float32", optimizer="gd", variant="plain", state=None,
               floor_value=1e-15, status="plateau", freeze_excess=6e-8, **extra):
    """(params, result) of a made-up cell: enough keys for report._rows and the verdict."""
    u = pr.format(fmt).u
    params = {"problem": problem, "condition": None, "format": fmt, "accumulate": fmt,
              "optimizer": optimizer, "state_format": state or fmt, "variant": variant, "seed": 0,
              "iterations": 100, "size": "quick"}
    its = np.arange(0, 101, 10)
    end = floor_value if math.isfinite(floor_value) else 1e-3
    excess = np.geomspace(1.0, end, its.size)
    result = {"eval_iterations": its, "exact_excess": excess, "unit_roundoff": u,
              "loss_freeze_iteration": 10, "excess_at_loss_freeze": freeze_excess,
              "predicted_excess_at_loss_freeze": 1.0 * u, "excess_floor": floor_value,
              "floor_status": status, "floor_iteration": 50, "predicted_floor": floor_value,
              "loss_resolution": 2 * u, "min_loss": 1.0, "lr": 0.25, "rounded_away": [0.0],
              "grad_rel_error": [1e-7], "hessian_condition": 10.0, "stop_message": "",
              "iterations_run": 100, "adam_eps": 1e-8, "blew_up_iteration": None,
              "predicted_swamping_floor": floor_value, "predicted_gradient_floor": floor_value / 10,
              "predicted_representation_floor": floor_value / 100, "reported_loss": np.ones(101)}
    result.update(extra)
    return params, result


def _verdict_text(cells):
    import importlib

    report = importlib.import_module("precision.studies.soft_target.report")
    return " ".join(report._verdict(report._rows(cells)).split())


def test_verdict_describes_adams_blow_up_by_the_recorded_division():
    ok = _synthetic(problem="bias-only", fmt="float16", optimizer="adam", floor_value=1e-8)
    inf = _synthetic(fmt="float16", optimizer="adam", floor_value=math.inf, status="blew_up",
                     blew_up_iteration=1, blow_up_nonfinite=2, blow_up_x_over_0=2, blow_up_0_over_0=0,
                     blow_up_other=0)
    text = _verdict_text([ok, inf])
    assert "2 were x/0 = ±inf" in text and "0/0 = NaN" not in text
    assert "Not blown up with the same state format: bias-only float16" in text
    assert "ε = 1e-8 rounds to 0" in text                      # float16 state: computed, not asserted
    nan = (inf[0], dict(inf[1], blow_up_x_over_0=0, blow_up_0_over_0=2))
    text = _verdict_text([ok, nan])
    assert "2 were 0/0 = NaN" in text and "x/0" not in text
    # β2 = 0.999 rounds to 1 only in bfloat16: the sentence appears exactly where such runs are
    assert "β2 = 0.999 rounds to 1" not in text
    bf = _synthetic(fmt="bfloat16", optimizer="adam", floor_value=1e-6)
    assert "in bfloat16 state (1 run) β2 = 0.999 rounds to 1" in _verdict_text([ok, bf])


def test_verdict_never_presents_an_upper_bound_as_a_floor():
    settled = _synthetic(floor_value=1e-15)
    still = _synthetic(problem="bias-only", floor_value=3e-14, status="decreasing")
    text = _verdict_text([settled, still])
    assert "In the 1 run whose exact excess levelled off" in text
    assert "only upper bounds (bias-only float32 ≤3e-14)" in text
    both = _verdict_text([settled, (still[0], dict(still[1], floor_status="plateau"))])
    assert "In the 2 runs whose exact excess levelled off" in both and "upper bound" not in both


def test_verdict_freeze_and_floor_claims_follow_the_numbers():
    u = 2.0 ** -24
    near = _verdict_text([_synthetic(freeze_excess=2 * u)])
    assert "at the loss-resolution level, as predicted" in near and "judge convergence" in near
    far = _verdict_text([_synthetic(freeze_excess=1e4 * u)])
    assert "not within 10× of the loss-resolution level" in far and "judge convergence" not in far
    missed = _verdict_text([_synthetic(predicted_floor=1e-20, predicted_swamping_floor=1e-20)])
    assert "misses the level by more than 10×" in missed


def test_verdict_attribution_and_lbfgs_ratios_follow_the_numbers():
    base = _synthetic(fmt="float16", floor_value=1e-5)
    exact = _synthetic(fmt="float16", variant="exact-gradient", floor_value=1e-5)
    master = _synthetic(fmt="float16", variant="master-f64", floor_value=1e-8)
    text = _verdict_text([base, exact, master])
    assert "update swamping sets the floor" in text and "master weights" in text
    flipped = _verdict_text([base, (exact[0], dict(exact[1], excess_floor=1e-8)),
                             (master[0], dict(master[1], excess_floor=1e-5))])
    assert "the gradient's rounding sets the floor" in flipped and "keep float32" not in flipped
    lbfgs = _synthetic(fmt="float16", optimizer="lbfgs", floor_value=1e-3, status="stopped",
                       state="float64")
    assert "float16 1e+02×" in _verdict_text([base, lbfgs])
    lower = (lbfgs[0], dict(lbfgs[1], excess_floor=1e-6))
    assert "float16 0.1×" in _verdict_text([base, lower])


# ----------------------------------------------------------------------------- the question's symptoms

@pytest.mark.parametrize("signal", [1e-9, 1e-5, 1e-2])
def test_signal_data_has_the_requested_gain_and_is_exact_in_float32(signal):
    from precision.studies.soft_target.symptoms import signal_data

    x, t, xv, tv, gain, h_mean = signal_data(signal)
    assert gain == pytest.approx(signal, rel=1e-3)
    for arr in (x, t, xv, tv):
        assert np.array_equal(arr.astype(np.float32).astype(np.float64), arr)
    assert np.array_equal(t.sum(axis=1), np.ones(len(t))) and (t > 0).all()
    # gain = H(t̄) − mean H(t), recomputed here in mpmath from the targets
    with mpmath.workdps(40):
        rows = [[mpmath.mpf(v) for v in r] for r in t.tolist()]
        mean = [mpmath.fsum(c) / len(rows) for c in zip(*rows)]
        h = lambda p: -mpmath.fsum(v * mpmath.log(v) for v in p)
        assert abs(float(h(mean) - mpmath.fsum(h(r) for r in rows) / len(rows)) - gain) < 1e-15
    same_x = signal_data(signal * 10 if signal < 1e-2 else signal / 10)[0]
    assert np.array_equal(same_x, x)                       # identical features at every level


@pytest.mark.parametrize("name", ["float32", "float64"])
def test_lbfgs_in_format_keeps_its_state_in_the_format_and_minimises(name):
    from precision.studies.soft_target.symptoms import lbfgs_in_format

    fmt = pr.format(name)
    a = np.diag([1.0, 10.0, 100.0]).astype(fmt.dtype)
    seen = []

    def fun(x):
        seen.append(x.dtype)
        return np.dot(x, a @ x) / 2, a @ x

    x, f, its, evals, message = lbfgs_in_format(fun, np.ones(3), fmt, 200)
    assert x.dtype == fmt.dtype and set(seen) == {np.dtype(fmt.dtype)}
    assert float(f) < 1e-10 and its < 200 and evals >= its
    assert message in ("gradient below tolerance_grad", "loss change below tolerance_change",
                       "step below tolerance_change")


def test_symptom_cells_run_and_validate():
    from precision.studies.soft_target import symptoms

    r = symptoms.run_cell({"part": "symptoms", "experiment": "models", "model": "bias", "signal": 1e-4,
                           "format": "float32", "optimizer": "scipy-ftol0", "seed": 0})
    # the bias-only model's optimum is H(t̄): float32 gets there to about an ulp
    assert abs(r["train_exact_loss"] - r["bias_min_loss"]) < 4 * r["loss_ulp"]
    assert r["final_reported_loss"] == float(np.float32(r["final_reported_loss"]))
    with pytest.raises(ValueError, match="flavour"):
        symptoms.run_cell({"experiment": "lbfgs", "format": "float32", "optimizer": "adam", "condition": 10})
    with pytest.raises(ValueError, match="experiment"):
        symptoms.run_cell({"experiment": "x", "format": "float32", "optimizer": "scipy-ftol0"})


def _model_cell(model, signal, fmt, train, val, gain_ulps=1.0):
    return ({"part": "symptoms", "experiment": "models", "model": model, "signal": signal, "format": fmt},
            {"achievable_gain": signal, "loss_ulp": signal / gain_ulps, "final_reported_loss": train,
             "val_reported_loss": val, "iterations_to_stop": 5, "train_exact_loss": train,
             "val_exact_loss": val, "bias_min_loss": 1.0})


def test_symptom_sentences_follow_the_numbers():
    from precision.studies.soft_target import symptoms_report as sr

    same = [_model_cell(m, 1e-8, "float32", 1.0, 1.001) for m in ("bias", "linear", "mlp")]
    text = " ".join(sr.models_sentences(same))
    assert "bit-identical at 1 of 1 signal levels (1e-08)" in text and "separate" not in text
    apart = [_model_cell(m, 1e-8, "float32", 1.0 - 1e-7 * (m != "bias"), 1.001) for m in ("bias", "linear", "mlp")]
    text = " ".join(sr.models_sentences(apart))
    assert "bit-identical at 0 of 1" in text and "they separate from gain = 1e-08" in text
    early = [_model_cell(m, 1e-8, "float32", 1.0 + 3e-8 * (m == "mlp"), 1.001, gain_ulps=1.0)
             for m in ("bias", "linear", "mlp")]
    assert "the MLP reported a higher final loss than the bias alone at 1 of 1 levels (by 3 ulp(L*))" \
        in " ".join(sr.models_sentences(early))
    assert "MLP reported a higher" not in text
    equal_val = [_model_cell(m, 1e-8, "float32", 1.0, 1.0) for m in ("bias", "linear", "mlp")]
    assert "in 3 of 3 runs" in " ".join(sr.models_sentences(equal_val))

    def lbfgs(f32, f64):
        return [({"part": "symptoms", "experiment": "lbfgs", "condition": 1e5, "optimizer": "scipy-default",
                  "format": fmt}, {"iterations_to_stop": its, "excess_at_stop": 1e-9, "stop_message": "",
                                   "hessian_condition": 1e5}) for fmt, its in (("float32", f32), ("float64", f64))]
    assert "is not reproduced" in sr.lbfgs_sentences(lbfgs(362, 639))[0]
    mlp = [({"part": "symptoms", "experiment": "models", "model": "mlp", "signal": 1e-9, "format": fmt},
            {"iterations_to_stop": its, "stop_message": "", "achievable_gain": 1e-9, "loss_ulp": 1e-7,
             "final_reported_loss": 1.0, "val_reported_loss": 1.0, "train_exact_loss": 1.0,
             "val_exact_loss": 1.0, "bias_min_loss": 1.0}) for fmt, its in (("float32", 41), ("float64", 2500))]
    assert "On the signal data it is, for the mlp model at gain 1e-09 (41 vs 2500)" in \
        sr.lbfgs_sentences(lbfgs(362, 639) + mlp)[0]
    assert "Nor on the signal data" in sr.lbfgs_sentences(lbfgs(362, 639) + mlp[:1] + [
        (mlp[1][0], dict(mlp[1][1], iterations_to_stop=80))])[0]
    assert "is reproduced for scipy-default at κ = 1e+05 (25 vs 2500)" in sr.lbfgs_sentences(lbfgs(25, 2500))[0]


def test_remedy_advice_only_when_a_remedy_helps():
    from precision.studies.soft_target import symptoms_report as sr

    def cells(f64_excess, kl_excess):
        return [({"experiment": "remedies", "objective": o, "format": "float32"},
                 {"iterations_to_stop": 10, "excess_at_stop": e, "excess_over_Lu": 1.0, "stop_message": ""})
                for o, e in (("ce", 1e-5), ("ce-f64", f64_excess), ("kl", kl_excess))]
    _, advice = sr.remedies_sentence(cells(1e-12, 1e-7))
    assert "in float64 or as a KL" in advice
    _, advice = sr.remedies_sentence(cells(1e-12, 5e-6))
    assert "in float64" in advice and "KL" not in advice
    assert sr.remedies_sentence(cells(5e-6, 5e-6))[1] == ""


def test_mechanism_sentences_follow_the_numbers():
    import importlib

    report = importlib.import_module("precision.studies.soft_target.report")
    from precision.studies.soft_target import symptoms_report as sr

    def sweep(power):
        cells = []
        for c in (0.25, 0.5, 1.0, 1.5):
            p, r = _synthetic(floor_value=1e-14 * c ** power, predicted_swamping_floor=1e-14 / c ** 2,
                              predicted_gradient_floor=1e-16, lr_times_lambda_max=c)
            cells.append(({**p, "part": "mechanisms", "lr_lambda": c}, r))
        return report._rows(cells)

    _, lines = sr.mechanisms_section(sweep(-2))
    assert "linear float32 -2.00" in lines[0] and "≈ −2 (swamping" in lines[0]
    _, lines = sr.mechanisms_section(sweep(0))
    assert "≈ 0 (gradient resolution" in lines[0] and "≈ −2" not in lines[0]

    def eps(rebound_below, rebound_above):
        cells = []
        for ratio in (20.0, 30.0, 45.0, 60.0):
            hit = rebound_above if ratio > 38 else rebound_below
            excess = [1.0, 1e-30, 1e-20 if hit else 1e-30]
            p, r = _synthetic(optimizer="adam", floor_value=1e-30, eval_iterations=np.array([0, 10, 20]),
                              exact_excess=np.array(excess), unit_roundoff=2.0 ** -53)
            cells.append(({**p, "part": "mechanisms", "eps_ratio": ratio}, r))
        return report._rows(cells)

    _, lines = sr.mechanisms_section(eps(False, True))
    assert "below 38, 0 of 2 runs rebounded; above it, 2 of 2 — the rebound starts where" in lines[0]
    _, lines = sr.mechanisms_section(eps(True, True))
    assert "not the clean split" in lines[0]


def test_post_sentence_names_what_stops_above_the_posts_kl():
    from precision.studies.soft_target import symptoms_report as sr

    def cell(kappa, excess):
        return ({"experiment": "lbfgs", "format": "float32", "optimizer": "scipy-default", "condition": kappa},
                {"excess_at_stop": excess})
    ulp = 2.0 ** -23
    low = " ".join(sr.post_sentence([cell(10.0, 1e-8), cell(1e5, 7e-5)], ulp))
    assert "1565 float32 ulps of H" in low and "No float32 L-BFGS run here stopped that high" in low
    assert "ill-conditioning comes closest" in low
    high = " ".join(sr.post_sentence([cell(10.0, 1e-8), cell(1e5, 3e-4)], ulp))
    assert "stopped at or above that excess in: scipy-default κ = 1e+05 (0.0003)" in high


def _ill_lbfgs(seed, stop_over_Hu, fmt="float32"):
    """An L-BFGS cell of the conditioning sweep that stopped at `stop_over_Hu` × L*·u."""
    u = pr.format(fmt).u
    params, result = _synthetic(problem="linear-ill-conditioned", fmt=fmt, optimizer="lbfgs",
                                floor_value=stop_over_Hu * u, status="stopped", state="float64")
    params.update(seed=seed, condition=1e4)
    return params, result


def test_verdict_folds_seeds_into_a_median_with_its_range():
    one = _verdict_text([_ill_lbfgs(0, 20)])
    assert "float32 κ=1e+04: stopped at 20× L*·u" in one
    assert "median" not in one.split("Ill-conditioned")[1] and "range" not in one.split("Ill-conditioned")[1]
    two = _verdict_text([_ill_lbfgs(0, 20), _ill_lbfgs(1, 60)])
    assert "float32 κ=1e+04: stopped at a median 40× L*·u (range 20–60, 2 seeds)" in two
    assert " s0" not in two and " s1" not in two                 # one item per setting, not per seed
    moved = _verdict_text([_ill_lbfgs(0, 20), _ill_lbfgs(1, 100)])
    assert "float32 κ=1e+04: stopped at a median 60× L*·u (range 20–1e+02, 2 seeds)" in moved
    same = _verdict_text([_ill_lbfgs(0, 20), _ill_lbfgs(1, 20)])
    assert "float32 κ=1e+04: stopped at 20× L*·u (all 2 seeds)" in same


def test_verdict_counts_adam_blow_ups_per_setting_over_seeds():
    def adam(seed, blown):
        params, result = _synthetic(fmt="float16", optimizer="adam",
                                    floor_value=math.inf if blown else 1e-6,
                                    status="blew_up" if blown else "plateau",
                                    blew_up_iteration=1 if blown else None, blow_up_x_over_0=1,
                                    blow_up_0_over_0=0, blow_up_other=0)
        params["seed"] = seed
        return params, result

    text = _verdict_text([adam(0, True), adam(1, True), adam(2, False)])
    assert "2 of 3 runs blew up" in text
    assert "linear float16 (state float16, iteration 1; 2 of 3 seeds)" in text
    assert "Not blown up with the same state format: linear float16 (1 of 3 seeds)" in text
    single = _verdict_text([adam(0, True)])
    assert "linear float16 (state float16, iteration 1)." in single and "seeds" not in single


def test_tables_fold_seeds_into_median_and_range():
    import importlib

    report = importlib.import_module("precision.studies.soft_target.report")
    rows = report._rows([_ill_lbfgs(0, 20), _ill_lbfgs(1, 60)])
    folded, columns = report._fold_seeds(rows, ["label", "seed", "floor_over_Hu", "floor_status"], ["label"])
    assert columns == ["label", "seeds", "floor_over_Hu", "floor_status"]
    assert folded == [{"label": "float32", "seeds": 2, "floor_over_Hu": "40 [20–60]", "floor_status": "stopped"}]
    single = report._rows([_ill_lbfgs(0, 20)])
    assert report._fold_seeds(single, ["label", "floor_over_Hu"], ["label"]) == (single, ["label", "floor_over_Hu"])
