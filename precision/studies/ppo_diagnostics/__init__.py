"""PPO's logged diagnostics (entropy, KL, explained variance) on real SB3 runs, exact and per format.

    precision study ppo-diagnostics [--smoke | --quick | --full] [--formats f16,bf16,f32,f64] [--seed S]

Needs the ``rl`` extra (stable-baselines3, gymnasium, torch).  The grid: PPO runs (Pendulum-v1 with
rl-zoo's gSDE settings, Pendulum-v1 with SB3's default Gaussian policy, CartPole-v1) recorded update
by update and every diagnostic recomputed exactly and in each format (``runs``, ``diagnostics``);
Schulman's KL-estimator ratios by Monte Carlo; the k3 precision sweep.  ``report``: report.md, plots
and the terminal verdict.
"""
from precision.study import Study

from .report import report, summarize, verdict

NAME = "ppo-diagnostics"

# environment steps per run: quick -- the gSDE Pendulum run needs ~40k steps for its entropy to
# cross zero (40 updates of 1024); the others a few thousand.
STEPS = {"smoke": {"pendulum-gsde": 512, "pendulum": 512, "cartpole": 256},
         "quick": {"pendulum-gsde": 40960, "pendulum": 8192, "cartpole": 8192},
         "full": {"pendulum-gsde": 102400, "pendulum": 51200, "cartpole": 51200}}
# smoke: shorter rollouts and fewer epochs, so that two updates take seconds
SMOKE_OVERRIDES = {"n_steps": 64, "n_epochs": 2}
SCHULMAN_SAMPLES = {"smoke": 20_000, "quick": 1_000_000, "full": 4_000_000}


def grid(size="quick", formats=None, seed=0):
    """The cells, in report order. formats: the formats to recompute the diagnostics in."""
    from .diagnostics import ALL_FORMATS

    fmts = [f for f in ALL_FORMATS if formats is None or f in formats] or list(formats)
    seeds = [seed, seed + 1, seed + 2] if size == "full" else [seed]
    cells = []
    for s in seeds:
        for run, steps in STEPS[size].items():
            cell = {"kind": "ppo", "run": run, "seed": s, "steps": steps, "formats": fmts,
                    "size": size}
            if size == "smoke":
                cell["overrides"] = dict(SMOKE_OVERRIDES)
            cells.append(cell)
    for mu in (0.1, 1.0):
        cells.append({"kind": "schulman", "mu": mu, "samples": SCHULMAN_SAMPLES[size], "seed": seed})
    cells.append({"kind": "k3-sweep", "formats": fmts, "seed": seed})
    return cells


def run_cell(params: dict) -> dict:
    """One cell: a recorded PPO run and its diagnostics, the Monte Carlo check, or the sweep."""
    import numpy as np

    from . import diagnostics, runs

    kind = params["kind"]
    if kind == "schulman":
        out = diagnostics.schulman_monte_carlo(params["mu"], params["samples"], params["seed"])
        out["closed_form"] = diagnostics.schulman_closed_form(params["mu"])
        return out
    if kind == "k3-sweep":
        return diagnostics.k3_sweep(params["formats"], seed=params["seed"])
    if kind != "ppo":
        raise ValueError(f"unknown cell kind {kind!r}")
    records = runs.run_ppo(params["run"], params["seed"], params["steps"],
                           overrides=params.get("overrides"))
    if not records:
        raise RuntimeError(f"run {params['run']} made no update in {params['steps']} steps")
    per_update = [diagnostics.update_diagnostics(rec, params["formats"]) for rec in records]
    traces = {key: np.array([u.get(key, np.nan) for u in per_update], dtype=np.float64)
              for key in per_update[0]}
    last = records[-1]
    return {"kind_of_policy": records[0]["kind"], "updates": len(records),
            "batch": int(last["values"].size), "traces": traces,
            "near_constant": diagnostics.near_constant_returns(last["values"], last["returns"]),
            "hyperparameters": runs.hyperparameters(params["run"], params.get("overrides"))}


def build(args):
    """The Study for the CLI: args.size is "smoke", "quick" (default) or "full"; optional formats, seed."""
    size = getattr(args, "size", None) or ("full" if getattr(args, "full", False) else "quick")
    formats = getattr(args, "formats", None)
    seed = int(getattr(args, "seed", 0) or 0)
    from .diagnostics import ALL_FORMATS

    fmts = [f for f in ALL_FORMATS if formats is None or f in formats] or list(formats)
    return Study(name=NAME, cells=grid(size, formats, seed), run_cell=run_cell,
                 summarize=summarize, report=report, verdict=verdict, version="1",
                 metadata={"grid": size, "seed": seed, "formats": fmts},
                 table_columns=["kind", "run", "mu", "steps", "updates", "entropy_first",
                                "entropy_last", "sigma_min", "kl_median", "k3_bias", "ev_last"])
