"""What the distributed tests start, once (``python``) or as P processes (``torchrun``); writes into ``out``.

``update <out>``: K=3 sub-policies trained three times on one fixed trajectory of three task groups (2 envs
each). One process trains on all groups; process r of three on group r only. Sub-policy 0 has data in every
process (gradients averaged), 1 in processes 0 and 1 (process 2 takes part with weight 0), 2 in process 2 alone
(trained there, then sent). ``update <out> 2``: the first two groups only (sub-policy 2 never acts). A third
argument is ``distributed.subpolicy_update`` (default ``allreduce``). Writes
``init_rank<r>.pt`` and ``update_rank<r>.pt`` (parameters before and after, update counters, Adam states).

``train <out> <overrides...>``: ``meta_train`` into ``out/run``, then ``params_rank<r>.pt`` (the sub-policies'
parameters and observation statistics as this process holds them, its groups, the summary). With
``FAIL_RANK1_AFTER=n`` process 1 raises in its iteration n + 1.

``drift <out>``: process 1 changes one weight; ``drift_rank<r>.txt`` holds what ``check_identical`` raised.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")

import numpy as np  # noqa: E402
import torch as th  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from mlsh import (
    distributed,  # noqa: E402
    sb3_adapter,  # noqa: E402
)
from mlsh.learners import build_ppo, make_task_env  # noqa: E402
from mlsh.selection import Trajectory  # noqa: E402
from mlsh.subpolicies import SubPolicyLearner  # noqa: E402

CONF = Path(__file__).resolve().parent.parent / "conf"


def config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def fixed_trajectory(policies, obs_dim: int, T: int = 40, n_envs: int = 6) -> Trajectory:
    """Three groups of 2 envs: sub-policy 0 acts in every group, 1 in groups 0 and 1, 2 in group 2 only."""
    rng = np.random.default_rng(123)
    obs = rng.normal(size=(T, n_envs, obs_dim)).astype(np.float32)
    choices = rng.integers(0, 2, size=(T, n_envs))
    choices[:, 4:] *= 2
    actions = np.zeros((T, n_envs, 1), np.int64)
    values = np.zeros((T, n_envs), np.float32)
    log_probs = np.zeros((T, n_envs), np.float32)
    with th.no_grad():
        for k, policy in enumerate(policies):
            mask = choices == k
            flat = th.as_tensor(obs[mask])
            dist = policy.get_distribution(flat)
            act = th.as_tensor(rng.integers(0, 5, size=len(flat)))
            actions[mask, 0] = act.numpy()
            log_probs[mask] = dist.log_prob(act).numpy()
            values[mask] = policy.predict_values(flat).numpy().reshape(-1)
    starts = np.zeros((T, n_envs), np.float32)
    starts[0] = 1
    return Trajectory(observations=obs, actions=actions, rewards=rng.normal(size=(T, n_envs)).astype(np.float32),
                      episode_starts=starts, values=values, log_probs=log_probs, choices=choices,
                      last_values=np.zeros(n_envs, np.float32), last_dones=np.zeros(n_envs, bool))


def update(out: Path, n_groups: int = 3, mode: str = "allreduce") -> None:
    world = distributed.init(60)
    cfg = config("env=movement_bandits", f"schedule.n_groups={n_groups}", "schedule.n_envs=2",
                 "schedule.rollout_steps=40", "macro_duration=10", "algo.subpolicy.minibatches=3")
    th.manual_seed(0)
    venv = make_task_env(cfg, seed=0, n_groups=1)
    sub = cfg.algo.subpolicy
    models = [build_ppo(sub, venv, 20, rollout_buffer_class=sb3_adapter.VariableRolloutBuffer) for _ in range(3)]
    distributed.broadcast_parameters(m.policy for m in models)
    learner = SubPolicyLearner(models, sub.ppo.gamma, sub.ppo.gae_lambda, minibatches=sub.minibatches, seed=0,
                               n_groups=n_groups, update=mode)
    traj = fixed_trajectory(learner.policies, venv.observation_space.shape[0])
    groups = [np.array([0, 1]), np.array([2, 3]), np.array([4, 5])][:n_groups]
    mine = list(range(n_groups)) if not world.active else [world.rank]
    th.save([m.policy.state_dict() for m in models], out / f"init_rank{world.rank}.pt")
    for _ in range(3):
        metrics = learner.train(traj, [groups[g] for g in mine], mine)
    th.save({"params": [m.policy.state_dict() for m in models], "n_updates": [m._n_updates for m in models],
             "adam": [m.policy.optimizer.state_dict()["state"] for m in models],
             "trained": [k for k in range(3) if f"sub{k}/loss" in metrics]}, out / f"update_rank{world.rank}.pt")


def train(out: Path, overrides: list[str]) -> None:
    from mlsh import train as loop
    from mlsh.learners import normalizer

    world = distributed.init(60)
    cfg = config("logger.mode=disabled", "progress_bar=false", *overrides)
    made, make = [], loop.make_learner

    def keep(*args):  # the learner, to read its state after the run
        made.append(make(*args))
        fail_after = int(os.environ.get("FAIL_RANK1_AFTER", "0"))
        if fail_after and world.rank == 1:
            calls, iterate = [0], made[-1].iterate

            def failing(*a, **k):
                calls[0] += 1
                if calls[0] > fail_after:
                    raise RuntimeError("injected failure")
                return iterate(*a, **k)

            made[-1].iterate = failing
        return made[-1]

    loop.make_learner = keep
    summary = loop.meta_train(cfg, out / "run", progress=False)
    learner = made[0]
    rms = getattr(normalizer(learner.top_env), "obs_rms", None)
    th.save({"summary": summary, "params": [m.policy.state_dict() for m in learner.subs],
             "groups": learner.group_ids,
             "obs_stats": None if rms is None else (rms.mean, rms.var, rms.count)},
            out / f"params_rank{world.rank}.pt")


def drift(out: Path) -> None:
    """Process 1 nudges one weight of one copy of a shared policy; every process writes what the check said."""
    world = distributed.init(60)
    th.manual_seed(world.rank)
    modules = {"sub-policy 0": th.nn.Linear(3, 2), "sub-policy 1": th.nn.Linear(3, 2)}
    distributed.broadcast_parameters(modules.values())
    said = ["identical"]
    distributed.check_identical(modules)
    if world.rank == 1:
        with th.no_grad():
            modules["sub-policy 1"].bias[0] += 1e-6
    try:
        distributed.check_identical(modules)
    except RuntimeError as err:
        said.append(str(err))
    (out / f"drift_rank{world.rank}.txt").write_text("\n".join(said))


def teardown(out: Path) -> None:
    """An optimizer is built (as every PPO model does) after the process group exists, then the process group is
    shut down: the names of the threads still alive (gloo's would abort the interpreter's teardown now and then)."""
    world = distributed.init(60)
    th.optim.Adam(th.nn.Linear(3, 2).parameters())
    distributed.gather(world.rank)
    during = _threads()
    distributed.shutdown()
    (out / f"threads_rank{world.rank}.json").write_text(json.dumps({"during": during, "after": _threads()}))


def _threads() -> list[str]:
    return sorted(Path(f"/proc/self/task/{t}/comm").read_text().strip() for t in os.listdir("/proc/self/task"))


if __name__ == "__main__":
    mode, folder = sys.argv[1], Path(sys.argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    if mode == "update":
        update(folder, int(sys.argv[3]) if len(sys.argv) > 3 else 3, *sys.argv[4:5])
    elif mode == "train":
        train(folder, sys.argv[3:])
    elif mode == "teardown":
        teardown(folder)
    else:
        drift(folder)
    distributed.shutdown()
