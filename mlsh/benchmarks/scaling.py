"""How meta-training scales over processes (torch.distributed, gloo): P=1 and P=2 timed in one command, at equal
task groups and primitive steps, then a projection to the paper's 120 processes from the measured parts.

    python -m mlsh.benchmarks.scaling [--envs movement_bandits ant_two_walk] [--procs 1 2] [--repeats 2]
                                      [--updates gather unbalanced allreduce]

Each run is ``torchrun --standalone --nproc-per-node P`` of the full loop (``mlsh.train.meta_train``: checkpoints
and metrics file included; W&B, maps and video off) with G task groups (default: the largest P, one group per process),
runs of both P alternating, each figure the best of ``--repeats``; each P > 1 once per sub-policy update mode
(``distributed.subpolicy_update``; ``unbalanced``: gather with ``distributed.balance_masters=false``, the masters
each trained in its own process). Efficiency = rate(P) / (P x rate(1)). Beside
each P > 1: P independent single-process runs of G/P groups each, started together and sharing nothing (what P
processes could give without any communication: the ceiling of the distributed run), and P copies of the P=1 run
at once (what the machine gives P processes at all: cache, memory bandwidth, clock). Rank 0
also times the parts of an iteration: collection (every primitive step with the sub-policy and master forwards),
the masters' updates, the sub-policy updates and, inside them, the communication between the processes
(gradient all-reduces, or the gathered data and the trained states sent back, each with its wait). With the
masters balanced, an iteration with a sub-policy update trains its masters inside that update (where they can move
between processes), so their time counts under the sub-policy updates there.

The projection (``allreduce``, the update whose work spreads over any number of processes; ``gather`` trains each
sub-policy in one process, so its update stops shrinking beyond K processes) keeps one task group per process, as
the P=2 run: each process's collection, master update and
sub-policy compute per iteration stay as measured there, and only the all-reduces grow with P. Each sub-policy
update is the same number of minibatches on every process, each ending in one all-reduce of the sub-policy's
gradient (the measured count per iteration). An all-reduce on P processes is modelled as a ring (2 (P - 1)
steps) and as recursive halving-doubling (2 log2 P steps, what MPI and gloo use for small messages), each step
costing gloo's own latency, fitted to all-reduces of the real sub-policy sizes over gloo on loopback (2
processes), plus 50 us of network, and 2 (P - 1) / P of the message crossing each link at the loopback's
bandwidth or 10 Gb Ethernet's, whichever is lower.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mlsh.benchmarks import cli_description

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"

# per env: schedule overrides that give a short, steady run (two thirds of the iterations joint, as the ant's
# W=20, U=40) and enough tasks per group for a few minutes
RUNS = {
    "movement_bandits": ["schedule.warmup_iters=9", "schedule.joint_iters=1"],
    "ant_two_walk": ["schedule.warmup_iters=2", "schedule.joint_iters=4", "schedule.rollout_steps=4000"],
}
# the runs with P > 1, by their label: how the sub-policies are updated, and whether the masters are balanced
UPDATES = {"gather": ["distributed.subpolicy_update=gather"],
           "unbalanced": ["distributed.subpolicy_update=gather", "distributed.balance_masters=false"],
           "allreduce": ["distributed.subpolicy_update=allreduce"]}


def worker(out: Path, overrides: list[str]) -> None:
    """One process of a timed run (started by torchrun): the loop, with its parts timed."""
    import torch as th
    from hydra import compose, initialize_config_dir
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from mlsh import distributed, learners, sb3_adapter, subpolicies
    from mlsh.train import meta_train

    th.set_num_threads(1)
    world = distributed.init(300)
    parts = {"iterate": 0.0, "collect": 0.0, "subs": 0.0, "comm": 0.0, "comms": 0, "sub_updates": 0,
             "sub_steps": 0}
    in_subs = [False]

    def count_step(optimizer, args, kwargs):  # sub-policy optimizer steps: an all-reduce each at scale
        parts["sub_steps"] += in_subs[0]

    def timed(fn, key, count=None):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                parts[key] += time.perf_counter() - t0
                if count:
                    parts[count] += 1
        return wrapper

    # masters = iterate - collect - subs; with distributed.balance_masters an iteration with a sub-policy update
    # trains the masters inside it (MasterBalancer.iterate), so their time is counted under subs there
    learners.MLSHLearner.iterate = timed(learners.MLSHLearner.iterate, "iterate")
    sb3_adapter.collect_groups = timed(sb3_adapter.collect_groups, "collect")

    def flagged(fn):
        counted = timed(fn, "subs", "sub_updates")

        def wrapper(*args, **kwargs):
            in_subs[0] = True
            try:
                return counted(*args, **kwargs)
            finally:
                in_subs[0] = False
        return wrapper

    subpolicies.SubPolicyLearner.train = flagged(subpolicies.SubPolicyLearner.train)
    learners.MasterBalancer.iterate = flagged(learners.MasterBalancer.iterate)
    register_optimizer_step_post_hook(count_step)

    def in_update(fn):  # communication inside a sub-policy update
        wrapped = timed(fn, "comm", "comms")
        return lambda *args, **kwargs: (wrapped if in_subs[0] else fn)(*args, **kwargs)

    distributed.GradientMean._reduce = in_update(distributed.GradientMean._reduce)
    for name in ("gather", "gather_to", "send_training_state", "receive_training_state"):
        setattr(distributed, name, in_update(getattr(distributed, name)))
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        # no pictures: rank 0 alone draws them (the ant's end-of-run video takes seconds), which is not the loop
        cfg = compose(config_name="config", overrides=["logger.mode=disabled", "progress_bar=false",
                                                       "media.maps_every=0", "media.video=false", *overrides])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = meta_train(cfg, Path(tmp) / "run", progress=False)
        wall = time.perf_counter() - t0
    if world.main:
        (out / "result.json").write_text(json.dumps({"summary": summary, "parts": parts, "wall": wall}))
    distributed.shutdown()


def allreduce_worker(out: Path, sizes: list[int], repeats: int) -> None:
    """Time all-reduces of float32 vectors of ``sizes`` elements (the sub-policies' gradients) over gloo."""
    import torch as th
    import torch.distributed as dist

    from mlsh import distributed

    world = distributed.init(300)
    result = {}
    for n in sizes:
        t = th.zeros(n, dtype=th.float32)  # the gradients' dtype
        for _ in range(20):
            dist.all_reduce(t)
        times = []
        for _ in range(repeats):
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(t)
            times.append(time.perf_counter() - t0)
        result[n] = float(np.median(times))
    if world.main:
        (out / "allreduce.json").write_text(json.dumps(result))
    distributed.shutdown()


def independent(nproc: int, groups: int, overrides: list[str], tasks: int) -> dict:
    """``nproc`` single-process runs of ``groups`` groups each, started together with nothing shared."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    own = [*overrides, f"schedule.n_groups={groups}", f"schedule.n_tasks={groups * tasks}"]
    with tempfile.TemporaryDirectory() as tmp:
        folders = [Path(tmp) / str(i) for i in range(nproc)]
        procs = []
        for folder in folders:
            folder.mkdir()
            procs.append(subprocess.Popen([sys.executable, "-m", "mlsh.benchmarks.scaling", "--worker", str(folder),
                                           *own], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        for proc in procs:
            _, err = proc.communicate(timeout=3600)
            if proc.returncode != 0:
                raise SystemExit(f"an independent run failed:\n{err.decode()[-3000:]}")
        results = [json.loads((f / "result.json").read_text()) for f in folders]
    return {"steps_per_second": sum(r["summary"]["steps_per_second"] for r in results),
            "global_step": sum(r["summary"]["global_step"] for r in results)}


def torchrun(nproc: int, args: list[str], timeout: float = 3600, module: str = "mlsh.benchmarks.scaling") -> None:
    """``python -m <module> <args>`` in ``nproc`` processes on this machine, one torch thread each."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", module, *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")


def subpolicy_size(env: str) -> int:
    """Trainable parameters of one sub-policy of an env's default config."""
    from hydra import compose, initialize_config_dir

    from mlsh.learners import build_ppo, make_task_env

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"env={env}", "logger.mode=disabled"])
    venv = make_task_env(cfg, seed=0, n_groups=1)
    model = build_ppo(cfg.algo.subpolicy, venv, 10)
    venv.close()
    return sum(p.numel() for p in model.policy.parameters() if p.requires_grad)


def allreduce_seconds(nbytes: float, procs: int, latency: float, bandwidth: float, kind: str) -> float:
    """An all-reduce of ``nbytes`` over ``procs`` processes: ``ring`` (2 (P - 1) steps, each a latency and 1/P of
    the message) or ``halving`` (recursive halving-doubling: 2 log2 P steps), both moving 2 (P - 1) / P of the
    message over each link."""
    if procs == 1:
        return 0.0
    steps = 2 * (procs - 1) if kind == "ring" else 2 * np.ceil(np.log2(procs))
    return steps * latency + 2 * (procs - 1) / procs * nbytes / bandwidth


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m mlsh.benchmarks.scaling",
                                     description=cli_description(__doc__))
    parser.add_argument("--envs", nargs="+", default=list(RUNS))
    parser.add_argument("--procs", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--groups", type=int, default=None, help="G (default: the largest P)")
    parser.add_argument("--tasks", type=int, default=None, help="tasks per group (default: 3 MovementBandits, 1 ant)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--updates", nargs="+", default=["gather", "allreduce"], choices=list(UPDATES),
                        help="distributed.subpolicy_update of the runs with P > 1 (unbalanced: gather with "
                             "distributed.balance_masters=false)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a run.py override for every run, after the env's (e.g. schedule.n_envs=10)")
    parser.add_argument("--save", help="write the measured runs to this JSON file")
    parser.add_argument("--load", help="print the tables of a --save file instead of running")
    parser.add_argument("--worker", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.add_argument("--allreduce", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(Path(args.worker[0]), args.worker[1:])
    if args.allreduce:
        return allreduce_worker(Path(args.allreduce[0]), [int(n) for n in args.allreduce[1].split(",")],
                                int(args.allreduce[2]))
    unknown = sorted(set(args.envs) - {p.stem for p in (CONF / "env").glob("*.yaml")})
    if unknown and not args.load:
        parser.error(f"--envs: no conf/env file for {unknown}")
    G = args.groups or max(args.procs)
    tables = []
    if args.load:  # print the tables of a saved run again (the projection re-measures the all-reduces)
        try:
            saved = json.loads(Path(args.load).read_text())
        except (OSError, ValueError) as err:
            parser.error(f"--load {args.load}: not a readable --save file ({err})")
        G, args.repeats = saved["G"], saved["repeats"]
        tables = [(env, o, best, *({int(p): v for p, v in d.items()} for d in ds))
                  for env, o, best, *ds in saved["tables"]]
    for env in [] if args.load else args.envs:
        tasks = args.tasks or (3 if env == "movement_bandits" else 1)
        overrides = [f"env={env}", *RUNS.get(env, []), *args.set, f"schedule.n_groups={G}",
                     f"schedule.n_tasks={G * tasks}", "schedule.stagger=wrapped"]
        best: dict[str, dict] = {}  # "P=2 gather" -> the best run
        ceiling: dict[int, dict] = {}
        copies: dict[int, dict] = {}
        base = [f"env={env}", *RUNS.get(env, []), *args.set, "schedule.stagger=wrapped"]
        for r in range(args.repeats):
            this: dict[str, float] = {}  # this repeat's rates
            for p in args.procs:
                for update in args.updates if p > 1 else [None]:
                    label = f"P={p}" + (f" {update}" if update else "")
                    mode = UPDATES[update] if update else []
                    with tempfile.TemporaryDirectory() as tmp:
                        torchrun(p, ["--worker", tmp, *overrides, *mode])
                        res = json.loads((Path(tmp) / "result.json").read_text())
                    res["procs"] = p
                    this[label] = res["summary"]["steps_per_second"]
                    if label not in best or res["summary"]["steps_per_second"] > \
                            best[label]["summary"]["steps_per_second"]:
                        best[label] = res
                if p > 1:
                    for found, groups in ((ceiling, G // p), (copies, G)):
                        alone = independent(p, groups, base, tasks)
                        this[f"{p} {'independent' if found is ceiling else 'copies'}"] = alone["steps_per_second"]
                        if p not in found or alone["steps_per_second"] > found[p]["steps_per_second"]:
                            found[p] = alone
            print(f"{env} repeat {r + 1}: {repeat_line(this, min(args.procs))}", flush=True)
        tables.append((env, overrides, best, ceiling, copies))
    if args.save:
        Path(args.save).write_text(json.dumps({"G": G, "repeats": args.repeats, "tables": tables}))
    print(f"\nscaling on this machine ({os.cpu_count()} cores), G={G} task groups, equal primitive steps, best of "
          f"{args.repeats}, torch threads 1:")
    print(f"{'env':<18} {'run':<16} {'steps':>10} {'steps/s':>9} {'efficiency':>10}   seconds per iteration on rank "
          f"0: collect, masters, subs (of which communication, calls)")
    for env, overrides, best, ceiling, copies in tables:
        first = min(best.values(), key=lambda b: b["procs"])
        ref = first["summary"]["steps_per_second"] / first["procs"]
        labels = list(best)
        for i, (label, b) in enumerate(best.items()):
            p = b["procs"]
            s, t = b["summary"], per_iteration(b, overrides, G)
            print(f"{env:<18} {label:<16} {s['global_step']:>10,} {s['steps_per_second']:>9,.0f} "
                  f"{s['steps_per_second'] / (p * ref):>10.2f}   {t['collect']:.3f}, {t['masters']:.3f}, "
                  f"{t['subs']:.3f} ({t['comm']:.4f}, {t['comms']:.0f})")
            last_of_p = i + 1 == len(labels) or best[labels[i + 1]]["procs"] != p
            if p in ceiling and last_of_p:
                c = ceiling[p]
                lead = next(label for label in labels if best[label]["procs"] == p)  # the first update listed
                rate = best[lead]["summary"]["steps_per_second"]
                print(f"{env:<18} {f'{p} independent':<16} {c['global_step']:>10,} {c['steps_per_second']:>9,.0f} "
                      f"{c['steps_per_second'] / (p * ref):>10.2f}   ({p} single-process runs of {G // p} groups at "
                      f"once, sharing nothing: {lead} is {rate / c['steps_per_second']:.2f} of it)")
                c = copies[p]
                print(f"{env:<18} {f'{p} copies of P=1':<16} {c['global_step']:>10,} {c['steps_per_second']:>9,.0f} "
                      f"{c['steps_per_second'] / (p * ref):>10.2f}   (the P=1 run {p} times at once: what the machine "
                      f"gives {p} processes)")
    projection(tables, G)


def repeat_line(rates: dict[str, float], p0: int) -> str:
    """One repeat's rates (``"P=2 gather"``, ``"2 independent"``, ... -> steps/s), each of more than ``p0``
    processes followed by its efficiency against this repeat's ``P=p0`` run."""
    base = rates.get(f"P={p0}")
    parts = []
    for label, rate in rates.items():
        p = int(label.removeprefix("P=").split()[0])  # "P=2 gather", "2 independent": 2 processes
        efficiency = f" ({rate * p0 / (p * base):.2f})" if base and p and p != p0 else ""
        parts.append(f"{label} {rate:,.0f} steps/s{efficiency}")
    return ", ".join(parts)


def per_iteration(result: dict, overrides: list[str], G: int) -> dict[str, float]:
    """Rank 0's parts of one iteration of the run of these overrides, in seconds (``comms``: calls)."""
    parts = result["parts"]
    iters = result["summary"]["global_step"] / (G * float(_rollout(overrides)))
    out = {k: parts[k] / iters for k in ("collect", "subs", "comm", "comms", "sub_steps")}
    out["masters"] = (parts["iterate"] - parts["collect"] - parts["subs"]) / iters
    return out


def _rollout(overrides: list[str]) -> int:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return int(cfg.schedule.rollout_steps)


WIRE_LATENCY = 50e-6  # s per message on a cluster network, on top of gloo's own cost measured on loopback
WIRE_BANDWIDTH = 1.25e9  # bytes/s, 10 Gb Ethernet


def projection(tables, G: int) -> None:
    """Steps/s and efficiency projected to 10..120 processes (the paper's 120 workers), one task group per process,
    from the P=2 run's parts and all-reduces timed on loopback."""
    for env, overrides, best, _, _ in tables:
        if "P=1" not in best or "P=2 allreduce" not in best or G != 2:
            continue
        n_params = subpolicy_size(env)
        sizes = [n_params, 2 * n_params, 4 * n_params, 8 * n_params, 16 * n_params]
        with tempfile.TemporaryDirectory() as tmp:
            torchrun(2, ["--allreduce", tmp, ",".join(map(str, sizes)), "1000"])
            measured = {int(k): v for k, v in json.loads((Path(tmp) / "allreduce.json").read_text()).items()}
        # 2 processes, either algorithm: 2 latency terms and one message over the link: fit latency and bandwidth
        slope, intercept = np.polyfit([4.0 * n for n in sizes], [measured[n] for n in sizes], 1)
        latency, bandwidth = max(intercept / 2, 1e-7), 1.0 / max(slope, 1e-12)
        t = per_iteration(best["P=2 allreduce"], overrides, G)
        compute = t["collect"] + t["masters"] + t["subs"] - t["comm"]
        rollout = float(_rollout(overrides))
        nbytes = 4.0 * n_params
        # at scale some group is joint in every iteration and several processes hold data for every sub-policy
        # update: one update per iteration, one all-reduce per optimizer step (as many as in one update at P=1)
        calls = best["P=1"]["parts"]["sub_steps"] / max(1, best["P=1"]["parts"]["sub_updates"])
        print(f"\n{env}: projection, one task group of {rollout:,.0f} steps per process and iteration (from P=2 "
              f"allreduce: "
              f"{t['collect']:.3f} s collecting, {t['masters']:.3f} s master update, "
              f"{t['subs'] - t['comm']:.3f} s sub-policy compute and waiting; at scale an update every "
              f"iteration, {calls:.0f} all-reduces of {n_params:,} float32, one per optimizer step)")
        print("all-reduce over gloo on loopback, 2 processes: " + ", ".join(
            f"{n * 4 / 1024:.0f} KiB {measured[n] * 1e6:.0f} us" for n in sizes)
            + f"; fitted per-step latency {latency * 1e6:.0f} us, bandwidth {bandwidth / 1e9:.2f} GB/s. A cluster: "
            f"latency + {WIRE_LATENCY * 1e6:.0f} us per step, bandwidth at most {WIRE_BANDWIDTH / 1e9:.2f} GB/s")
        print(f"{'P':>4} {'ring steps/s':>13} {'efficiency':>10} {'halving-doubling steps/s':>25} {'efficiency':>10}")
        lat, bw = latency + WIRE_LATENCY, min(bandwidth, WIRE_BANDWIDTH)
        for p in (1, 2, 10, 20, 40, 80, 120):
            row = []
            for kind in ("ring", "halving"):
                seconds = compute + calls * allreduce_seconds(nbytes, p, lat, bw, kind)
                row += [p * rollout / seconds, compute / seconds]
            print(f"{p:>4} {row[0]:>13,.0f} {row[1]:>10.2f} {row[2]:>25,.0f} {row[3]:>10.2f}")


if __name__ == "__main__":
    main()
