"""Task groups: one group reproduces the loop as it was before groups; several keep their own tasks and masters,
are staggered as the original, and the sub-policy update is the mean of the joint groups' gradients."""

import copy

import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv

from envs.movement_bandits import MovementBanditsEnv
from mlsh import sb3_adapter
from mlsh.groups import stagger
from mlsh.learners import (
    MASTER_STREAM,
    MLSHLearner,
    build_ppo,
    make_task_env,
    sample_task,
    shuffled_task,
    task_rng,
    task_set,
)
from mlsh.master import MasterPolicy
from mlsh.runlog import read_metrics
from mlsh.sb3_adapter import VariableRolloutBuffer, capture_logger
from mlsh.subpolicies import SubPolicyLearner
from mlsh.train import meta_train, setup_torch
from tests.helpers import random_trajectory

TINY = ("schedule=smoke", "logger.mode=disabled", "schedule.n_envs=4", "schedule.rollout_steps=400")


def _reference_loop(cfg):
    """The meta-training loop as it was before task groups: one task at a time, the master collecting with SB3's
    own ``collect_rollouts`` on the selection wrapper, all envs reset at every task."""
    setup_torch(cfg)
    venv = make_task_env(cfg, seed=cfg.seed * 1000)
    learner = MLSHLearner(cfg, venv)
    rng = task_rng(cfg.seed, "train")
    m = cfg.algo.master
    rows = []
    for index in range(cfg.schedule.n_tasks):
        task = sample_task(venv, rng)
        learner.env.set_options({"task": task})
        first_obs = learner.env.reset()
        master = build_ppo(m, learner.env, learner.macro_steps, policy=MasterPolicy,
                           policy_kwargs={"random_pick_prob": m.random_pick_prob},
                           rollout_buffer_class=sb3_adapter.SeededRolloutBuffer)
        sb3_adapter.begin_collection(master, first_obs)
        for it in range(cfg.schedule.warmup_iters + cfg.schedule.joint_iters):
            sb3_adapter.collect(master, learner.macro_steps)
            traj = learner.env.pop_trajectory()
            sb3_adapter.seed_minibatches(master, (cfg.seed, MASTER_STREAM, 0, index))  # as MLSHLearner.start_task
            row = {f"master/{k.removeprefix('train/')}": v for k, v in sb3_adapter.train(master).items()}
            if it >= cfg.schedule.warmup_iters:
                row.update(learner.sub_learner.train(traj))
            row["episode_return"] = float(np.mean(venv.pop()))
            rows.append(row)
    return rows, learner


def test_one_group_equals_the_loop_before_task_groups_step_for_step(compose, tmp_path):
    cfg = compose(*TINY, "schedule.n_tasks=3", "schedule.warmup_iters=2", "schedule.joint_iters=2", "seed=3")
    meta_train(cfg, tmp_path, progress=False)
    rows = [r for r in read_metrics(tmp_path) if "episode_return" in r]
    reference, learner = _reference_loop(cfg)
    assert len(rows) == len(reference) == 12
    for got, want in zip(rows, reference, strict=True):
        for key, value in want.items():
            if key in ("master/n_updates", "sub0/n_updates", "sub1/n_updates"):
                continue
            assert got[key] == pytest.approx(value, rel=0, abs=0), key
    assert any(r["episode_return"] > 0 for r in rows)  # the comparison covers returns that are not all zero
    saved = PPO.load(tmp_path / "checkpoints" / "task_00002" / "sub1.zip", device="cpu").policy.state_dict()
    for name, value in learner.subs[1].policy.state_dict().items():
        assert th.equal(saved[name], value), name


def test_each_group_keeps_its_own_task_envs_and_master(compose):
    cfg = compose(*TINY, "schedule.n_groups=3")
    setup_torch(cfg)
    learner = MLSHLearner(cfg, make_task_env(cfg, seed=0))
    assert learner.env.num_envs == 12 and learner.group_envs == 4
    for g, task in enumerate([1, 0, 1]):
        learner.start_task(task, g)
    shared, per_group = learner.iterate([False, False, False])
    assert shared == {} and len(per_group) == 3  # no group in its joint phase: no sub-policy update
    assert learner.env.get_attr("task") == [1] * 4 + [0] * 4 + [1] * 4
    assert len({id(m) for m in learner.masters}) == 3
    weights = [m.policy.action_net.weight.detach().clone() for m in learner.masters]
    assert not th.equal(weights[0], weights[1]) and not th.equal(weights[1], weights[2])
    learner.start_task(0, 1)  # a new task for group 1: its envs and its master only
    assert learner.env.get_attr("task") == [1] * 4 + [0] * 4 + [1] * 4
    learner.start_task(1, 1)
    assert learner.env.get_attr("task") == [1] * 12
    assert th.equal(learner.masters[0].policy.action_net.weight, weights[0])
    assert not th.equal(learner.masters[1].policy.action_net.weight, weights[1])


def test_inference_is_batched_over_the_envs_of_all_groups(compose, monkeypatch):
    import mlsh.selection

    calls = []
    real = mlsh.selection.numpy_forward

    def spy(policy):
        forward = real(policy)
        assert forward is not None  # SB3's MLP: the numpy forward

        def counted(obs):
            calls.append(len(obs))
            return forward(obs)
        return counted

    monkeypatch.setattr(mlsh.selection, "numpy_forward", spy)
    cfg = compose(*TINY, "schedule.n_groups=3")
    learner = MLSHLearner(cfg, make_task_env(cfg, seed=0))
    for g in range(3):
        learner.start_task(g % 2, g)
    learner.iterate([True, False, True])
    primitive_steps = learner.per_env
    assert sum(calls) == 12 * primitive_steps  # every env of every group, once per primitive step
    assert primitive_steps <= len(calls) <= 2 * primitive_steps  # at most one forward per sub-policy per step


def test_stagger_is_the_originals_formula_and_spreads_the_joint_phases(compose, tmp_path):
    assert [stagger(g, 9, 1) for g in range(10)] == [9 * g for g in range(10)]  # int(W + U / 10) = 9
    assert [stagger(g, 20, 30) for g in range(4)] == [0, 23, 46, 69]  # int(20 + 3) = 23
    assert [stagger(g, 20, 30, "wrapped") for g in range(4)] == [0, 23, 46, 19]  # the same phases mod 50
    assert [stagger(g, 9, 1, "wrapped") for g in range(10)] == [0, 9, 8, 7, 6, 5, 4, 3, 2, 1]
    with pytest.raises(ValueError, match="stagger must be one of"):
        stagger(1, 9, 1, "bogus")
    for kind in ("original", "wrapped"):
        cfg = compose(*TINY, "schedule.n_groups=3", "schedule.warmup_iters=3", "schedule.joint_iters=2",
                      "schedule.n_tasks=7", f"schedule.stagger={kind}")
        meta_train(cfg, tmp_path / kind, progress=False)
    for g in range(3):  # offsets 0, 3, 6 (original) and 0, 3, 1 (wrapped, modulo W + U = 5)
        originally, wrapped = ([r[f"group{g}/phase_joint"] for r in read_metrics(tmp_path / kind)
                                if "episode_return" in r] for kind in ("original", "wrapped"))
        assert originally.index(1) - wrapped.index(1) == stagger(g, 3, 2) - stagger(g, 3, 2, "wrapped")
        a, b = originally[originally.index(1):], wrapped[wrapped.index(1):]
        n = min(len(a), len(b))
        assert n >= 5 and a[:n] == b[:n]  # the same phases after the first joint iteration (a W + U cycle)
    rows = [r for r in read_metrics(tmp_path / "original") if "episode_return" in r]
    for g in range(3):
        joint = [r[f"group{g}/phase_joint"] for r in rows]
        first = joint.index(1)
        assert first == 3 + stagger(g, 3, 2), (g, joint)  # W warmup iterations plus the stagger, then joint
        assert joint[first:first + 2] == [1, 1]
        assert rows[first - 1][f"group{g}/task_index"] == rows[first + 1][f"group{g}/task_index"]  # same task
    assert [r["joint_groups"] for r in rows] == [sum(r[f"group{g}/phase_joint"] for g in range(3)) for r in rows]
    assert all(r["global_step"] == 1200 * (i + 1) for i, r in enumerate(rows))  # one axis: every group's steps


def test_shuffled_task_order_deals_every_task_once_per_deck(compose, tmp_path):
    goals = task_set(make_task_env(compose("env=four_rooms", *TINY), seed=0))
    assert len(goals) > 2 and len(set(goals)) == len(goals)
    dealt = [shuffled_task(goals, 5, i) for i in range(3 * len(goals))]
    decks = [dealt[i:i + len(goals)] for i in range(0, len(dealt), len(goals))]
    assert all(sorted(d) == sorted(goals) for d in decks) and len({tuple(d) for d in decks}) > 1
    assert dealt == [shuffled_task(goals, 5, i) for i in range(len(dealt))]  # a function of seed and number
    assert dealt != [shuffled_task(goals, 6, i) for i in range(len(dealt))]
    # a run: its task number i is dealt that way, whichever group takes it (MovementBandits: 2 tasks)
    cfg = compose(*TINY, "schedule.n_groups=3", "schedule.n_tasks=8", "schedule.task_order=shuffled", "seed=4")
    meta_train(cfg, tmp_path, progress=False)
    rows = sorted((r for r in read_metrics(tmp_path) if "task/index" in r), key=lambda r: r["task/index"])
    assert [r["task/index"] for r in rows] == list(range(len(rows))) and len(rows) >= 6
    assert [r["task/task"] for r in rows] == [shuffled_task([0, 1], 4, r["task/index"]) for r in rows]
    assert all(rows[i]["task/task"] != rows[i + 1]["task/task"] for i in range(0, len(rows) - 1, 2))


def test_subpolicy_update_gets_exactly_the_joint_groups_data(compose, monkeypatch):
    # every step each sub-policy took in a joint group (min_share=0, the original; the env file's 1 filters further,
    # tests/test_subpolicies.py)
    cfg = compose(*TINY, "schedule.n_groups=3", "algo.subpolicy.min_share=0")
    learner = MLSHLearner(cfg, make_task_env(cfg, seed=0))
    for g in range(3):
        learner.start_task(g % 2, g)
    seen = []
    monkeypatch.setattr(sb3_adapter, "train_on_batch", lambda model, batch, **kw: seen.append(batch) or {})
    traj_box = []
    real_pop = learner.env.pop_trajectory
    learner.env.pop_trajectory = lambda: traj_box.append(real_pop()) or traj_box[-1]
    learner.iterate([True, False, True])
    traj = traj_box[0]
    obs = traj.observations.reshape(-1, 6)
    env_of = np.tile(np.arange(12), traj.choices.shape[0])
    choice = traj.choices.reshape(-1)
    assert len(seen) == sum(np.any(choice[np.isin(env_of, np.r_[0:4, 8:12])] == k) for k in range(2))
    for k, batch in enumerate(seen):
        want = [np.flatnonzero((choice == k) & np.isin(env_of, envs)) for envs in (range(0, 4), range(8, 12))]
        want = [w for w in want if len(w)]
        np.testing.assert_array_equal(batch["observations"], obs[np.concatenate(want)])
        assert batch["group_sizes"] == [len(w) for w in want]


def _group_trajectory():
    """Two groups of two envs, T=6; env 0 and 2 run sub-policy 0, env 1 and 3 sub-policy 1 (env 3 switches)."""
    choices = np.tile([0, 1, 0, 1], (6, 1))
    choices[4:, 3] = 0
    return random_trajectory(choices)


def test_batches_normalise_advantages_per_group_and_list_the_groups_in_order():
    venv = DummyVecEnv([MovementBanditsEnv])
    models = [PPO("MlpPolicy", venv, n_steps=8, device="cpu", rollout_buffer_class=VariableRolloutBuffer)
              for _ in range(2)]
    learner = SubPolicyLearner(models, 0.99, 0.98, "share")
    traj = _group_trajectory()
    b0, b1 = learner.batches(traj, [np.array([0, 1]), np.array([2, 3])])
    assert b0["group_sizes"] == [6, 8] and b1["group_sizes"] == [6, 4]  # env 3 ran sub-policy 0 for 2 steps
    flat = traj.observations.reshape(-1, 6)
    np.testing.assert_array_equal(b0["observations"][:6], flat[0::4])  # group 0 first: env 0, time order
    for batch in (b0, b1):
        start = 0
        for size in batch["group_sizes"]:
            adv = batch["advantages"][start:start + size]
            assert adv.mean() == pytest.approx(0, abs=1e-6) and adv.std() == pytest.approx(1, abs=1e-3)
            start += size
    only_second = learner.batches(traj, [np.array([2, 3])])
    assert only_second[1]["group_sizes"] == [4]
    np.testing.assert_array_equal(only_second[1]["observations"], flat[[3, 7, 11, 15]])


def _ppo_loss(policy, obs, actions, advantages, returns, vf_coef):
    """PPO's loss at the parameters that collected the data (ratio 1, so no clipping), no entropy term."""
    values, log_prob, _ = policy.evaluate_actions(obs, actions)
    ratio = th.exp(log_prob - log_prob.detach())
    return -(advantages * ratio).mean() + vf_coef * ((returns - values.flatten()) ** 2).mean()


def test_subpolicy_gradient_is_the_mean_of_the_groups_gradients():
    venv = DummyVecEnv([MovementBanditsEnv])
    th.manual_seed(0)
    model = PPO("MlpPolicy", venv, n_steps=8, batch_size=4, n_epochs=1, max_grad_norm=1e9, ent_coef=0.0,
                normalize_advantage=False, device="cpu", rollout_buffer_class=VariableRolloutBuffer)
    capture_logger(model)
    before = copy.deepcopy(model.policy)
    rng = np.random.default_rng(1)
    n_a, n_b = 2, 4  # group a has 2 samples, group b 4: one minibatch of 4 per group (a's samples twice)
    obs = th.as_tensor(rng.random((n_a + n_b, 6)), dtype=th.float32)
    actions = th.as_tensor(rng.integers(0, 5, n_a + n_b))
    with th.no_grad():
        values, log_probs, _ = before.evaluate_actions(obs, actions)
    advantages = th.as_tensor(rng.normal(size=n_a + n_b), dtype=th.float32)
    returns = th.as_tensor(rng.normal(size=n_a + n_b), dtype=th.float32)
    sb3_adapter.train_on_batch(model, dict(observations=obs.numpy(), actions=actions.numpy(),
                                           values=values.numpy().ravel(), log_probs=log_probs.numpy(),
                                           advantages=advantages.numpy(), returns=returns.numpy(),
                                           group_sizes=[n_a, n_b]))
    assert model._n_updates == 1

    def grads(sl):
        before.zero_grad()
        _ppo_loss(before, obs[sl], actions[sl], advantages[sl], returns[sl], model.vf_coef).backward()
        return [p.grad.clone() for p in before.parameters()]

    g_a, g_b, g_all = grads(slice(0, n_a)), grads(slice(n_a, None)), grads(slice(None))
    got = [p.grad for p in model.policy.parameters()]  # the gradient of the one minibatch step
    for mine, a, b in zip(got, g_a, g_b, strict=True):
        th.testing.assert_close(mine, (a + b) / 2, rtol=1e-4, atol=1e-6)
    # and not the gradient of the pooled samples, which weighs group b twice as much as group a
    assert not all(th.allclose(mine, pooled, rtol=1e-3, atol=1e-5) for mine, pooled in zip(got, g_all, strict=True))


def test_one_group_batches_are_sb3s_own_minibatches():
    venv = DummyVecEnv([MovementBanditsEnv])
    buffer = VariableRolloutBuffer(8, venv.observation_space, venv.action_space, device="cpu")
    data = dict(observations=np.arange(30 * 6, dtype=np.float32).reshape(30, 6), actions=np.zeros(30),
                values=np.zeros(30), log_probs=np.zeros(30), advantages=np.arange(30.0), returns=np.zeros(30))
    buffer.load(**data, group_sizes=[30])
    np.random.seed(5)
    mine = [b.advantages.numpy() for b in buffer.get(8)]
    buffer.load(**data)
    np.random.seed(5)
    sb3 = [b.advantages.numpy() for b in super(VariableRolloutBuffer, buffer).get(8)]
    assert [len(b) for b in mine] == [8, 8, 8, 6]
    for a, b in zip(mine, sb3, strict=True):
        np.testing.assert_array_equal(a, b)
    buffer.load(**data, group_sizes=[10, 20])
    batches = [b.advantages.numpy() for b in buffer.get(8)]
    assert [len(b) for b in batches] == [16, 16, 8]  # 8 + 8 per minibatch, the last 4 + 4: 20 = 8 + 8 + 4
    first = np.concatenate([b[: len(b) // 2] for b in batches])  # group a's part: two permutations of 0..9
    assert sorted(first.tolist()) == sorted(list(range(10)) * 2)
    second = np.concatenate([b[len(b) // 2:] for b in batches])
    assert sorted(second.tolist()) == list(range(10, 30))
    buffer.group_weighting = "samples"  # each group by its size: its samples split evenly over ceil(30 / 8) = 4
    buffer.load(**data, group_sizes=[10, 20])
    batches = [b.advantages.numpy() for b in buffer.get(8)]
    assert [len(b) for b in batches] == [3 + 5, 3 + 5, 2 + 5, 2 + 5]
    assert sorted(np.concatenate(batches).tolist()) == list(range(30))  # every sample once per epoch
    assert all((b[:len(b) - 5] < 10).all() and (b[len(b) - 5:] >= 10).all() for b in batches)
    buffer.n_minibatches = 3  # the original's fixed number per epoch: 30 samples in 3, (4 + 7) (3 + 7) (3 + 6)
    assert [len(b.advantages) for b in buffer.get(8)] == [11, 10, 9]
    buffer.group_weighting = "groups"  # per group, ceil(20 / 3) = 7 of each: 7 + 7 + 6 positions
    buffer.load(**data, group_sizes=[10, 20])
    assert [len(b.advantages) for b in buffer.get(8)] == [14, 14, 12]
    with pytest.raises(ValueError, match="group_sizes"):
        buffer.load(**data, group_sizes=[10, 10])


def test_warmup_return_is_the_last_warmup_iterations_mean_return(compose, tmp_path):
    cfg = compose(*TINY, "schedule.n_groups=2", "schedule.warmup_iters=2", "schedule.joint_iters=1",
                  "schedule.n_tasks=4")
    meta_train(cfg, tmp_path, progress=False)
    rows = read_metrics(tmp_path)
    tasks = [r for r in rows if "task/final_return" in r]
    assert [r["task/group"] for r in tasks][:2] == [0, 1] and len(tasks) == 4
    iters = [r for r in rows if "episode_return" in r]
    for t in tasks:
        g, index = t["task/group"], t["task/index"]
        mine = [r for r in iters if r[f"group{g}/task_index"] == index]
        last_warmup = [r for r in mine if r[f"group{g}/phase_joint"] == 0][-1]
        assert t["task/warmup_return"] == pytest.approx(last_warmup[f"group{g}/episode_return"])
        assert t["task/final_return"] == pytest.approx(mine[-1][f"group{g}/episode_return"])


def test_resume_of_a_run_with_groups_continues_their_clocks(compose, tmp_path):
    import shutil

    from mlsh import checkpoint

    cfg = compose(*TINY, "schedule.n_groups=2", "schedule.warmup_iters=2", "schedule.joint_iters=1",
                  "schedule.n_tasks=4")
    meta_train(cfg, tmp_path / "full", progress=False)
    meta_train(cfg, tmp_path / "cut", progress=False)
    shutil.rmtree(checkpoint.task_dir(tmp_path / "cut", 3))
    shutil.rmtree(checkpoint.task_dir(tmp_path / "cut", 2))
    meta_train(cfg, tmp_path / "cut", progress=False, resume=True)
    full, cut = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "cut")
    timing = ("steps_per_second", "time_minutes")
    assert [{k: v for k, v in r.items() if k not in timing} for r in cut] == \
        [{k: v for k, v in r.items() if k not in timing} for r in full]  # exact resume (tests/test_reliability.py)
    with pytest.raises(ValueError, match=r"another config \(schedule.n_groups: 2 -> 3"):
        cfg3 = compose(*TINY, "schedule.n_groups=3", "schedule.warmup_iters=2", "schedule.joint_iters=1",
                       "schedule.n_tasks=5")
        meta_train(cfg3, tmp_path / "cut", progress=False, resume=True)


def test_a_masters_update_moved_to_another_model_is_the_same_update_bit_for_bit(compose):
    """What ``MasterBalancer`` does between processes, in one: a master's update exported after collection and run
    by another model of the same architecture (other initial weights, another global random state) gives the
    weights, optimizer state and records of the master trained where it is."""
    cfg = compose(*TINY, "schedule.n_groups=2")
    setup_torch(cfg)
    learner = MLSHLearner(cfg, make_task_env(cfg, seed=0))
    for g in range(2):
        learner.start_task(g, g, task_index=7 + g)
    assert learner.masters[1].minibatch_key == (cfg.seed, MASTER_STREAM, 1, 8)
    sb3_adapter.collect_groups(learner.masters, learner.env, learner.slices, learner.macro_steps)
    master = learner.masters[1]
    sb3_adapter.seed_minibatches(master, master.minibatch_key)
    state = sb3_adapter.export_update(master)
    helper = learner._build_master(learner.indices[0])
    assert not th.equal(helper.policy.action_net.weight, master.policy.action_net.weight)
    np.random.seed(1)
    sb3_adapter.import_update(helper, state)
    moved = sb3_adapter.train(helper)
    np.random.seed(2)  # the global generator plays no part in a master's minibatches
    here = MLSHLearner.train_master(master)
    assert moved == here
    for name, value in master.policy.state_dict().items():
        assert th.equal(helper.policy.state_dict()[name], value), name
    mine, theirs = master.policy.optimizer.state_dict(), helper.policy.optimizer.state_dict()
    for idx, st in mine["state"].items():
        assert th.equal(st["exp_avg"], theirs["state"][idx]["exp_avg"]), idx
    assert helper._n_updates == master._n_updates == cfg.algo.master.ppo.n_epochs
    with pytest.raises(RuntimeError, match="freshly filled"):  # trained since: its buffer is flattened
        sb3_adapter.export_update(master)


def test_the_masters_minibatches_depend_on_their_group_and_task(compose):
    """Each master's minibatch order comes from (seed, group, task, update): two masters on the same data with
    other keys train apart, with the same key alike."""
    cfg = compose(*TINY)
    setup_torch(cfg)
    learner = MLSHLearner(cfg, make_task_env(cfg, seed=0))
    learner.start_task(0, 0, task_index=0)
    sb3_adapter.collect_groups(learner.masters, learner.env, learner.slices, learner.macro_steps)
    master = learner.masters[0]
    sb3_adapter.seed_minibatches(master, master.minibatch_key)
    state = sb3_adapter.export_update(master)
    weights = {}
    for key in [(0, MASTER_STREAM, 0, 0), (0, MASTER_STREAM, 0, 0), (0, MASTER_STREAM, 0, 1)]:
        model = learner._build_master(learner.indices[0])
        sb3_adapter.import_update(model, state)
        sb3_adapter.seed_minibatches(model, key)
        sb3_adapter.train(model)
        weights.setdefault(key, []).append(model.policy.action_net.weight.detach().clone())
    same, other = weights[(0, MASTER_STREAM, 0, 0)], weights[(0, MASTER_STREAM, 0, 1)]
    assert th.equal(same[0], same[1]) and not th.equal(same[0], other[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_observation_filter_updates_as_sb3s_does_bit_for_bit(dtype):
    from stable_baselines3.common.running_mean_std import RunningMeanStd

    from mlsh.groups import TrackedRMS, batch_moments

    rng = np.random.default_rng(1)
    for n, dim in [(1, 1), (3, 27), (20, 27), (40, 111), (513, 376)]:
        arr = (rng.normal(size=(n, dim)) * rng.uniform(0.1, 100) + rng.normal()).astype(dtype)
        mean, var = batch_moments(arr)
        assert mean.dtype == dtype and var.dtype == dtype
        assert np.array_equal(mean, np.mean(arr, axis=0)) and np.array_equal(var, np.var(arr, axis=0))
    sb3, tracked = RunningMeanStd(shape=(27,)), TrackedRMS(shape=(27,), track=True)
    for n in (20, 20, 7):
        arr = rng.normal(size=(n, 27)).astype(dtype) * 3
        sb3.update(arr)
        tracked.update(arr)
    assert np.array_equal(sb3.mean, tracked.mean) and np.array_equal(sb3.var, tracked.var)
    assert sb3.count == tracked.count and tracked.fresh.count == 47
