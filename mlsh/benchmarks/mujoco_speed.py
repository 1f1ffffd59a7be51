"""MuJoCo step rates, batched (``envs.batch``) against per-env stepping and gymnasium's own env, in one command:

    python -m mlsh.benchmarks.mujoco_speed [--envs ant_two_walk humanoid_walk_crawl] [--steps 6400] [--iters 6]

**Env rate** (random actions, uniform in the action space, one process): for each env, gymnasium's base env
(``Ant-v5`` / ``Humanoid-v5``, one ``gym.make`` env as a user steps it), this project's per-env stack (``n`` envs,
``DummyVecEnv`` of ``gym.make`` envs, what ``env.batched=false`` builds), the batched env on 1 thread (per core)
and on 2 threads. For the batched env, the share of its time spent inside MuJoCo's step call and the rate that
call alone would give (``C step only``: no env of this model and physics can beat it on that many threads); and
the physics with no env at all (``mj_step only``): ``mujoco.mj_step`` over ``n`` ``MjData`` of the env's model in a
Python loop, ``frame_skip`` substeps each, random controls, reset to the model's initial state only where the
env ends an episode on a fall (the humanoids' healthy height range): what one core's physics costs without
``mujoco.batch``.
The runners take turns in ``--rounds`` chunks, so that a background load hits all alike; a rate is total steps
over total time.

**End to end**: MLSH meta-training on AntTwoWalk (or ``--e2e-env``: AntMaze, HumanoidWalkCrawl) with its config
(the paper's N=200, W=20, U=40, 8000 steps per group and iteration, the env file's task groups and envs per group,
or each ``--layouts GxN``: G groups of N envs):
``--iters`` iterations spread evenly over one cycle of the staggered groups' steady state (each group joint in the
iterations where its task is past warmup, as in a run), every update included: per-env stepping and the batched
env with minibatches of 64 steps, then the batched env on 1 and 2 threads with the original's 15 minibatches per
epoch (the config's default); against the rate of gymnasium's base env (Ant-v5, or Humanoid-v5 for the humanoid)
timed in turn in the same command, 8000 steps just before and 8000 just after each row. The ratio is the row's rate
over the base env's in those two turns: this machine's speed drifts by up to a third within minutes, so a base rate
averaged over the whole command would flatter the rows run in its fast stretches and wrong the others.
``--repeats R`` runs every row R times in turn and ends with each row's median, lowest and highest ratio.
``--procs 1 2`` runs each variant in one process and in two started by torchrun (the groups spread over them, as
``torchrun ... run.py`` does; the layout's G must be a multiple of P); the update share is the slowest process's
(with several processes it includes the masters' updates of the iterations with a sub-policy update, which
``distributed.balance_masters`` trains inside it).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
import torch as th
from stable_baselines3.common.env_util import make_vec_env

import envs  # noqa: F401  (registers mlsh/*)
from envs.batch import MujocoBatchVecEnv
from mlsh.benchmarks import cli_description
from mlsh.groups import TaskVecEnv

ENVS = {  # config name: (env id, gymnasium base env)
    "ant_two_walk": ("mlsh/AntTwoWalk-v0", "Ant-v5"),
    "ant_maze": ("mlsh/AntMaze-v0", "Ant-v5"),
    "ant_obstacle": ("mlsh/AntObstacle-v0", "Ant-v5"),
    "humanoid_walk_crawl": ("mlsh/HumanoidWalkCrawl-v0", "Humanoid-v5"),
    "humanoid_course": ("mlsh/HumanoidCourse-v0", "Humanoid-v5"),
}
ENV_TARGET, E2E_TARGET = 3.0, 2.0  # issue 12: batched env vs the base env per core; MLSH vs Ant-v5


class _Timed:
    def __init__(self, name: str):
        self.name, self.steps, self.seconds = name, 0, 0.0

    def rate(self) -> float:
        return self.steps / self.seconds


class _Gym(_Timed):
    """One gymnasium env, reset when an episode ends."""

    def __init__(self, name: str, env_id: str, seed: int = 0):
        super().__init__(name)
        self.env = gym.make(env_id)
        self.env.reset(seed=seed)
        self.env.action_space.seed(seed)

    def run(self, n: int) -> None:
        env, actions = self.env, [self.env.action_space.sample() for _ in range(n)]
        start = time.perf_counter()
        for a in actions:
            _, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                env.reset()
        self.seconds += time.perf_counter() - start
        self.steps += n


class _Vec(_Timed):
    """A VecEnv of ``n`` envs; ``run(n_steps)`` steps it ``n_steps / n`` times. For a batched env, the time spent
    inside MuJoCo's step call (``sim_seconds``) is timed too."""

    def __init__(self, name: str, venv, seed: int = 0):
        super().__init__(name)
        self.venv, self.rng = venv, np.random.default_rng(seed)
        self.sim_seconds = None
        if isinstance(venv, MujocoBatchVecEnv):
            self.sim_seconds, step = 0.0, venv.sim.step

            def timed_step(*args, **kwargs):
                start = time.perf_counter()
                step(*args, **kwargs)
                self.sim_seconds += time.perf_counter() - start

            venv.sim.step = timed_step
        venv.seed(seed)
        venv.reset()

    def run(self, n: int) -> None:
        space, k = self.venv.action_space, self.venv.num_envs
        actions = self.rng.uniform(space.low, space.high, (n // k, k, *space.shape)).astype(np.float32)
        start = time.perf_counter()
        for a in actions:
            self.venv.step(a)
        self.seconds += time.perf_counter() - start
        self.steps += len(actions) * k


class _Physics(_Timed):
    """The env's physics alone: ``n`` ``MjData`` of its model, each advanced by ``frame_skip`` substeps of
    ``mujoco.mj_step`` per step with random controls in the actuators' ranges; no task logic. A simulation is reset
    to the model's initial state where the env would end the episode for a fall (``terminate_when_unhealthy``, the
    root's height outside ``healthy_z_range``): a fallen humanoid, lying in contact with the floor, costs more
    than a standing one."""

    def __init__(self, name: str, env_id: str, n: int, seed: int = 0):
        super().__init__(name)
        env = gym.make(env_id).unwrapped
        self.model, self.frame_skip = env.model, env.frame_skip
        self.healthy_z = env.healthy_z_range if getattr(env, "terminate_when_unhealthy", False) else None
        env.close()  # only its model is kept
        self.data = [mujoco.MjData(self.model) for _ in range(n)]
        for d in self.data:
            mujoco.mj_forward(self.model, d)
        self.rng = np.random.default_rng(seed)
        self.resets = 0

    def run(self, n: int) -> None:
        low, high = self.model.actuator_ctrlrange.T
        k = len(self.data)
        controls = self.rng.uniform(low, high, (n // k, k, self.model.nu))
        z_min, z_max = self.healthy_z or (-np.inf, np.inf)
        start = time.perf_counter()
        for ctrl in controls:
            for d, c in zip(self.data, ctrl, strict=True):
                d.ctrl[:] = c
                mujoco.mj_step(self.model, d, self.frame_skip)
                if not z_min <= d.qpos[2] <= z_max:
                    mujoco.mj_resetData(self.model, d)
                    mujoco.mj_forward(self.model, d)
                    self.resets += 1
        self.seconds += time.perf_counter() - start
        self.steps += len(controls) * k


def env_rates(name: str, steps: int, rounds: int, n: int) -> list[_Timed]:
    env_id, base = ENVS[name]
    runners: list[_Timed] = [
        _Gym(f"gymnasium {base}, 1 env", base),
        _Vec(f"per-env stack, {n} envs", make_vec_env(env_id, n_envs=n, vec_env_cls=TaskVecEnv)),
        _Vec(f"batched, {n} envs, 1 thread", MujocoBatchVecEnv(env_id, n, nthread=1)),
        _Vec(f"batched, {n} envs, 2 threads", MujocoBatchVecEnv(env_id, n, nthread=2)),
        _Physics(f"mj_step only, {n} MjData, no env", env_id, n),
    ]
    chunk = max(n, steps // rounds // n * n)
    for r in range(rounds):
        for runner in runners if r % 2 == 0 else runners[::-1]:
            runner.run(chunk)
    return runners


E2E = {  # variant: overrides of the env's config (minibatches=null: ppo.batch_size samples, 64)
    "per-env stack, minibatches of 64": ["env.batched=false", "algo.subpolicy.minibatches=null"],
    "batched, 1 thread, minibatches of 64": ["env.batch_threads=1", "algo.subpolicy.minibatches=null"],
    "batched, 1 thread, 15 minibatches": ["env.batch_threads=1", "algo.subpolicy.minibatches=15"],
    "batched, 2 threads, 15 minibatches": ["env.batch_threads=2", "algo.subpolicy.minibatches=15"],
}
SHORT = dict(zip(("per-env-64", "batched-64", "batched-15", "batched2-15"), E2E, strict=True))  # --variants keys


def variant_name(name: str) -> str:
    """A ``--variants`` item: a short key or the full name."""
    if name in SHORT or name in E2E:
        return SHORT.get(name, name)
    raise argparse.ArgumentTypeError(f"{name!r}: give one of {', '.join(SHORT)} (or the full names: "
                                     f"{'; '.join(E2E)})")


def steady_state(n_groups: int, warmup: int, joint: int, kind: str, iters: int) -> list[list[bool]]:
    """Which groups train their sub-policies in ``iters`` iterations spread evenly over one W + U cycle of the
    steady state: group g, started ``stagger(g)`` iterations late, is joint where its task is past warmup."""
    from mlsh.groups import stagger

    cycle = warmup + joint
    return [[(t - stagger(g, warmup, joint, kind)) % cycle >= warmup for g in range(n_groups)]
            for t in (i * cycle // iters for i in range(iters))]


def e2e_rate(overrides: list[str], iters: int, env: str = "ant_two_walk") -> dict[str, float]:
    """Primitive steps per second of ``iters`` MLSH iterations on ``env``, and the share spent in the
    sub-policy update. Started by torchrun (``--e2e-worker``), each process runs its own task groups as
    ``mlsh.train`` spreads them, merging the observation filter after every iteration as a run does; the rate is
    every process's steps over the slowest process's time."""
    from hydra import compose, initialize_config_dir

    from mlsh import distributed
    from mlsh.benchmarks.scaling import CONF
    from mlsh.learners import make_learner, make_task_env, normalizer, sample_task, task_rng

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"env={env}", "logger.mode=disabled", *overrides])
    world = distributed.world()
    th.manual_seed(world.rank)
    G = cfg.schedule.n_groups
    mine = world.groups(G)
    venv = make_task_env(cfg, seed=mine[0] * cfg.schedule.n_envs, n_groups=len(mine))
    learner = make_learner(cfg, venv, mine)
    rng = task_rng(0, "train", world.rank)
    for g in mine:
        learner.start_task(sample_task(venv, rng), g)
    pattern = steady_state(G, cfg.schedule.warmup_iters, cfg.schedule.joint_iters,
                           cfg.schedule.get("stagger", "original"), iters)
    sub_seconds = 0.0

    def timed(fn):
        def wrapper(*args, **kwargs):
            nonlocal sub_seconds
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            sub_seconds += time.perf_counter() - start
            return out
        return wrapper

    learner.sub_learner.train = timed(learner.sub_learner.train)
    if getattr(learner, "balancer", None) is not None:  # several processes: the masters train inside the update
        learner.balancer.iterate = timed(learner.balancer.iterate)
    if world.active:
        distributed.gather(None)  # start together
    start = time.perf_counter()
    for joint in pattern:
        learner.iterate([joint[g] for g in mine], train_subs=any(joint))
        if world.active:
            distributed.sync_obs_stats(getattr(normalizer(venv), "obs_rms", None))
    seconds = time.perf_counter() - start
    if world.active:
        seconds, sub_seconds = max(distributed.gather((seconds, sub_seconds)))
    steps = iters * cfg.schedule.rollout_steps * G
    venv.close()
    return {"steps": steps, "steps_per_second": steps / seconds, "subs_share": sub_seconds / seconds,
            "layout": layout_name(cfg), "procs": world.size, "env": env}


def e2e_procs(procs: int, overrides: list[str], iters: int, env: str = "ant_two_walk") -> dict[str, float]:
    """``e2e_rate`` in this process (``procs`` 1) or in ``procs`` processes started by torchrun."""
    if procs == 1:
        return e2e_rate(overrides, iters, env)
    from mlsh.benchmarks.scaling import torchrun

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "e2e.json"
        torchrun(procs, ["--e2e-worker", str(out), str(iters), env, *overrides], module="mlsh.benchmarks.mujoco_speed")
        return json.loads(out.read_text())


def _e2e_worker(out: str, iters: str, env: str, overrides: list[str]) -> None:
    from mlsh import distributed

    th.set_num_threads(1)
    world = distributed.init(300)
    result = e2e_rate(overrides, int(iters), env)
    if world.main:
        Path(out).write_text(json.dumps(result))
    distributed.shutdown()


def layout_overrides(layout: str) -> list[str]:
    """``GxN`` (G task groups of N envs) as config overrides; ``config``: the env file's."""
    if layout == "config":
        return []
    groups, sep, n_envs = layout.partition("x")
    if not (sep and groups.isdigit() and n_envs.isdigit()):
        raise SystemExit(f"--layouts {layout!r}: give GxN, e.g. 2x4 (2 task groups of 4 envs), or config")
    return [f"schedule.n_groups={groups}", f"schedule.n_envs={n_envs}"]


def layout_name(cfg) -> str:
    """A config's task groups and envs per group as ``GxN``."""
    return f"{cfg.schedule.n_groups}x{cfg.schedule.n_envs}"


def check_layout(env: str, layout: str, procs: list[int]):
    """``env``'s config with ``layout``; a clear error, before anything runs, for a layout the config refuses or
    that ``procs`` cannot share."""
    from hydra import compose, initialize_config_dir

    from mlsh.benchmarks.scaling import CONF
    from mlsh.config import ConfigError, validate

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"env={env}", *layout_overrides(layout)])
    name = layout_name(cfg) + (", the env file's" if layout == "config" else "")
    if any(p < 1 for p in procs):
        raise SystemExit(f"--procs {min(procs)}: give 1 or more processes")
    for p in procs:  # the checks of a run with p processes (task groups spread evenly over them, ...)
        try:
            validate(cfg, processes=p)
        except ConfigError as err:
            raise SystemExit(f"--layouts {name} of {env} with --procs {p}: {err}") from None
    return cfg


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlsh.benchmarks.mujoco_speed",
                                     description=cli_description(__doc__))
    parser.add_argument("--envs", nargs="*", default=["ant_two_walk", "humanoid_walk_crawl"], choices=list(ENVS),
                        help="envs of the env-rate table (none: skip it)")
    parser.add_argument("--steps", type=int, default=6400, help="timed steps per runner and env")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--n", type=int, default=16, help="envs of the vectorised runners")
    parser.add_argument("--iters", type=int, default=6, help="MLSH iterations per end-to-end variant (0: none)")
    parser.add_argument("--variants", nargs="+", default=list(E2E), type=variant_name, metavar="VARIANT",
                        help=f"end-to-end variants: {', '.join(f'{k} ({v})' for k, v in SHORT.items())}")
    parser.add_argument("--layouts", nargs="+", default=["config"],
                        help="GxN: G task groups of N envs (rollout_steps 8000 must be a multiple of N x 200); "
                             "config: the env file's")
    parser.add_argument("--procs", nargs="+", type=int, default=[1],
                        help="processes of each end-to-end variant (P > 1: torchrun, the groups spread over them)")
    parser.add_argument("--e2e-env", default="ant_two_walk", choices=list(ENVS),
                        help="env of the end-to-end rows (default ant_two_walk), against its gymnasium base env")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of each end-to-end row, in turn; with R > 1 a last table of each row's ratios")
    parser.add_argument("--e2e-worker", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.e2e_worker:
        return _e2e_worker(*args.e2e_worker[:3], args.e2e_worker[3:])
    if args.repeats < 1 or args.iters < 0:
        parser.error("--repeats must be >= 1 and --iters >= 0")
    # a variant given by its key and by its full name, or a layout twice, is one row
    args.layouts, args.variants, args.procs = (list(dict.fromkeys(a)) for a in (args.layouts, args.variants,
                                                                                 args.procs))
    cfgs = {layout: check_layout(args.e2e_env, layout, args.procs) for layout in args.layouts}
    th.set_num_threads(1)
    print(f"env step rate, random actions, one process ({args.steps} steps per runner in {args.rounds} "
          f"alternating rounds)")
    print(f"{'env':<22} {'runner':<32} {'steps/s':>9} {'vs base':>8} {'in C step':>10} {'C step only':>12}")
    for name in args.envs:
        runners = env_rates(name, args.steps, args.rounds, args.n)
        base = runners[0].rate()
        for r in runners:
            line = f"{name:<22} {r.name:<32} {r.rate():>9,.0f} {r.rate() / base:>8.2f}"
            if getattr(r, "sim_seconds", None):
                line += f" {r.sim_seconds / r.seconds:>10.2f} {r.steps / r.sim_seconds:>12,.0f}"
            print(line, flush=True)
    if not args.iters:
        return
    _, base_id = ENVS[args.e2e_env]
    cfg = next(iter(cfgs.values()))  # N, W, U and the steps per group: the same in every layout
    sched = cfg.schedule
    print(f"\nMLSH meta-training on {args.e2e_env} (N={cfg.macro_duration}, W={sched.warmup_iters}, "
          f"U={sched.joint_iters}, {sched.rollout_steps} steps per group and iteration), "
          f"{args.iters} iterations over the staggered groups' steady state, against gymnasium {base_id} timed in "
          f"turn:")
    print(f"{'variant':<36} {'P':>2} {'groups':>7} {'steps':>8} {'steps/s':>9} {base_id:>11} {'ratio':>6} "
          f"{'update share':>13}")
    base = _Gym(base_id, base_id)
    rows = [(layout, variant, procs) for layout in args.layouts for variant in args.variants for procs in args.procs]
    ratios: dict[tuple, list[float]] = {row: [] for row in rows}
    for _ in range(args.repeats):
        for layout, variant, procs in rows:
            steps, seconds = base.steps, base.seconds
            base.run(8000)
            res = e2e_procs(procs, E2E[variant] + layout_overrides(layout), args.iters, args.e2e_env)
            base.run(8000)
            base_rate = (base.steps - steps) / (base.seconds - seconds)  # its own two turns, right around the row
            ratio = res["steps_per_second"] / base_rate
            ratios[layout, variant, procs].append(ratio)
            print(f"{variant:<36} {procs:>2} {res['layout']:>7} {res['steps']:>8,} "
                  f"{res['steps_per_second']:>9,.0f} {base_rate:>11,.0f} "
                  f"{ratio:>6.2f} {res['subs_share']:>13.2f}", flush=True)
    if args.repeats > 1:
        print(f"\nratio over the {args.repeats} runs of each row:")
        print(f"{'variant':<36} {'P':>2} {'layout':>7} {'median':>7} {'lowest':>7} {'highest':>8}")
        for (layout, variant, procs), r in ratios.items():
            print(f"{variant:<36} {procs:>2} {layout_name(cfgs[layout]):>7} {np.median(r):>7.2f} {min(r):>7.2f} "
                  f"{max(r):>8.2f}")
    print(f"(targets, issue 12: batched env >= {ENV_TARGET}x its base env per core; MLSH on ant_two_walk >= "
          f"{E2E_TARGET}x Ant-v5)")


if __name__ == "__main__":
    main()
