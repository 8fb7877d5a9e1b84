"""Real PPO runs (Stable-Baselines3 on Gymnasium) that record what every update saw.

:class:`RecordingPPO` is SB3's PPO with ``train()`` wrapped: before the update it evaluates the old
policy on the whole rollout (action-distribution parameters and log-probabilities of the taken
actions), during it records every minibatch as SB3 sees it (the float32 log-ratio
``log_prob - old_log_prob`` exactly as SB3 forms it, and the distribution it takes the entropy
of), after it evaluates the new policy on the same rollout and reads what SB3 logged
(``logger.name_to_value``).  Torch runs on CPU with one thread, seeded: a run is deterministic.

The records are plain numpy arrays (float32, as torch produced them); :mod:`.diagnostics`
recomputes every diagnostic from them, exactly and in each format.
"""
from __future__ import annotations

import numpy as np

# The runs (hyperparameters).  "pendulum-gsde" is rl-baselines3-zoo's tuned Pendulum-v1 PPO
# (4 envs, gSDE with log_std_init -2, gamma 0.9, lr 1e-3, 10 epochs; zoo: n_steps 1024 and 1e5
# steps, here n_steps 256 so that a short run has more updates): its entropy crosses zero after
# ~40k steps, the picture of the question.  "pendulum" is SB3's default Gaussian policy
# (state-independent log_std, init 0) with the same settings otherwise.  "cartpole" is SB3's
# defaults with a shorter rollout (discrete: a categorical policy).
RUNS = {
    "pendulum-gsde": {"env": "Pendulum-v1", "n_envs": 4, "n_steps": 256, "batch_size": 64,
                      "n_epochs": 10, "learning_rate": 1e-3, "gamma": 0.9, "gae_lambda": 0.95,
                      "use_sde": True, "sde_sample_freq": 4, "log_std_init": -2.0},
    "pendulum": {"env": "Pendulum-v1", "n_envs": 4, "n_steps": 256, "batch_size": 64,
                 "n_epochs": 10, "learning_rate": 1e-3, "gamma": 0.9, "gae_lambda": 0.95,
                 "use_sde": False, "log_std_init": 0.0},
    "cartpole": {"env": "CartPole-v1", "n_envs": 1, "n_steps": 512, "batch_size": 64,
                 "n_epochs": 10, "learning_rate": 3e-4, "gamma": 0.99, "gae_lambda": 0.95},
}


def _np(t):
    return t.detach().cpu().numpy().copy()


def _dist_params(policy, obs):
    """(kind, params) of the policy's action distribution at obs: ("gaussian", (mean, log_std))
    per sample (B, d) float32, or ("categorical", (logits,)) (B, k)."""
    import torch as th
    from stable_baselines3.common.distributions import (CategoricalDistribution,
                                                        DiagGaussianDistribution,
                                                        StateDependentNoiseDistribution)

    with th.no_grad():
        dist = policy.get_distribution(obs)
        if isinstance(dist, CategoricalDistribution):
            return "categorical", (_np(dist.distribution.logits),)
        if isinstance(dist, DiagGaussianDistribution):
            mean = _np(dist.distribution.loc)
            # the parameter itself (exact), not log(exp(log_std)) rounded twice
            log_std = np.broadcast_to(_np(policy.log_std), mean.shape).copy()
            return "gaussian", (mean, log_std)
        if isinstance(dist, StateDependentNoiseDistribution):
            # gSDE: sigma(s) = sqrt(sum_j phi_j(s)^2 exp(log_std_jk)^2), a diagonal Gaussian per state
            return "gaussian", (_np(dist.distribution.loc), _np(th.log(dist.distribution.scale)))
    raise TypeError(f"unsupported action distribution {type(dist).__name__}")


def _log_prob(policy, obs, actions):
    import torch as th

    with th.no_grad():
        _, log_prob, _ = policy.evaluate_actions(obs, actions)
    return _np(log_prob)


def hyperparameters(run: str, overrides: dict | None = None) -> dict:
    """RUNS[run] with `overrides` (e.g. the smoke grid's shorter rollouts) applied."""
    if run not in RUNS:
        raise ValueError(f"unknown run {run!r} (known: {', '.join(RUNS)})")
    hp = dict(RUNS[run])
    unknown = set(overrides or {}) - set(hp)
    if unknown:
        raise ValueError(f"unknown hyperparameters {sorted(unknown)}")
    hp.update(overrides or {})
    return hp


def make_model(run: str, seed: int, overrides: dict | None = None):
    """The PPO model of run `run` (a key of RUNS), seeded, torch on CPU with one thread."""
    import torch as th
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    th.set_num_threads(1)
    hp = hyperparameters(run, overrides)
    env = make_vec_env(hp.pop("env"), n_envs=hp.pop("n_envs"), seed=seed)
    policy_kwargs = {"log_std_init": hp.pop("log_std_init")} if "log_std_init" in hp else {}

    class RecordingPPO(PPO):
        """PPO whose train() records each update (see the module docstring)."""

        records: list = []

        def train(self) -> None:
            import torch as th

            buf = self.rollout_buffer
            n = buf.buffer_size * buf.n_envs
            obs = th.as_tensor(buf.swap_and_flatten(buf.observations.copy())).float()
            actions = th.as_tensor(buf.swap_and_flatten(buf.actions.copy()))
            if self.action_space.__class__.__name__ == "Discrete":
                actions = actions.long().flatten()
            kind, old = _dist_params(self.policy, obs)
            old_logp = buf.swap_and_flatten(buf.log_probs.copy()).reshape(n)
            values = buf.swap_and_flatten(buf.values.copy()).reshape(n)
            returns = buf.swap_and_flatten(buf.returns.copy()).reshape(n)
            minibatches = []
            current = {}
            original_get = buf.get
            original_eval = self.policy.evaluate_actions

            def recording_get(batch_size=None):
                for data in original_get(batch_size):
                    current["data"] = data
                    yield data

            def recording_eval(mb_obs, mb_actions):
                v, log_prob, entropy = original_eval(mb_obs, mb_actions)
                with th.no_grad():
                    log_ratio = log_prob - current["data"].old_log_prob   # as SB3 forms it
                _, params = _dist_params(self.policy, mb_obs)
                minibatches.append({"log_ratio": _np(log_ratio), "params": params,
                                    "torch_entropy": float(entropy.detach().mean()) if entropy is not None
                                    else float("nan")})
                return v, log_prob, entropy

            buf.get = recording_get
            self.policy.evaluate_actions = recording_eval
            try:
                super().train()
            finally:
                del buf.get
                del self.policy.evaluate_actions
            _, new = _dist_params(self.policy, obs)
            new_logp = _log_prob(self.policy, obs, actions)
            logged = {k.split("/", 1)[1]: float(v) for k, v in self.logger.name_to_value.items()
                      if k.startswith("train/")}
            minibatches_per_epoch = -(-n // self.batch_size)
            self.records.append({
                "step": int(self.num_timesteps), "kind": kind, "old": old, "new": new,
                "old_logp": old_logp, "new_logp": new_logp, "values": values, "returns": returns,
                "minibatches": minibatches, "minibatches_per_epoch": minibatches_per_epoch,
                "logged": logged})

    model = RecordingPPO("MlpPolicy", env, seed=seed, device="cpu", verbose=0,
                         policy_kwargs=policy_kwargs, **hp)
    model.records = []
    return model


def run_ppo(run: str, seed: int, total_steps: int, overrides: dict | None = None) -> list[dict]:
    """Train run `run` for total_steps environment steps; the list of per-update records."""
    model = make_model(run, seed, overrides)
    model.learn(total_timesteps=int(total_steps))
    return model.records
