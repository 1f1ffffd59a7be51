"""Task groups spread over processes with torch.distributed (issue 11): 2-process gloo runs started with torchrun."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO

from mlsh import checkpoint, snapshot
from mlsh.runlog import read_metrics
from tests.conftest import ROOT

WORKER = str(ROOT / "tests" / "distributed_worker.py")
TIMING = ("steps_per_second", "time_minutes", "dist/masters_moved")  # what the timing decides
# MovementBandits, 2 task groups of 2 envs, 1 warmup + 2 joint iterations per task
SMALL = ("schedule=smoke", "schedule.n_groups=2", "schedule.joint_iters=2")


def torchrun(*args: str, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]


def run(cmd: list[str], timeout: float = 300, **extra_env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": os.environ.get("WANDB_MODE", "disabled"), **extra_env}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[:3000] + "\n...\n" + proc.stderr[-3000:]
    return proc


def rows(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(run_dir)]


@pytest.mark.parametrize("mode", ["gather", "allreduce"])
@pytest.mark.parametrize("groups", [2, 3])
def test_update_over_processes_equals_the_update_in_one(tmp_path, groups, mode):
    """G groups' data: one process with all, or G processes with one each. Sub-policy 0 has data everywhere, 1
    in processes 0 and 1, 2 in process 2 alone (with G=2 nowhere). "allreduce": 0 and 1 average their gradients
    over the processes (with G=3 the third joins 1's with weight 0), 2 is trained in process 2 and sent; the same
    parameters as one process after three updates, to float tolerance. "gather": each sub-policy's data goes to
    the process that trains it (0, 1, 2 to processes 0, 1, 2 mod G); the same parameters bit for bit. Both:
    parameters, update counters and Adam states bit-identical in the G processes."""
    ok(run([sys.executable, WORKER, "update", str(tmp_path / "one"), str(groups), mode]))
    ok(run(torchrun(WORKER, "update", str(tmp_path / "many"), str(groups), mode, nproc=groups)))
    one = th.load(tmp_path / "one" / "update_rank0.pt")
    ranks = [th.load(tmp_path / "many" / f"update_rank{r}.pt") for r in range(groups)]
    init = th.load(tmp_path / "one" / "init_rank0.pt")
    for k in range(3 if groups == 3 else 2):
        for name, value in one["params"][k].items():
            for other in ranks[1:]:
                assert th.equal(ranks[0]["params"][k][name], other["params"][k][name]), (k, name)
            if mode == "gather":
                assert th.equal(value, ranks[0]["params"][k][name]), (k, name)
            else:
                assert th.allclose(value, ranks[0]["params"][k][name], rtol=0, atol=1e-6), (k, name)
        for other in ranks[1:]:
            assert other["n_updates"] == ranks[0]["n_updates"] == one["n_updates"]
            for idx, state in ranks[0]["adam"][k].items():
                assert th.equal(state["exp_avg_sq"], other["adam"][k][idx]["exp_avg_sq"]), (k, idx)
        # the updates moved every sub-policy
        assert float((one["params"][k]["action_net.weight"] - init[k]["action_net.weight"]).abs().max()) > 1e-3
    assert one["n_updates"] == [30, 30, 30 if groups == 3 else 0]  # 3 updates of 10 epochs (sub-policy 2: data?)
    # who trained what: "gather" gives process r sub-policy r; "allreduce" trains 0 and 1 everywhere they have
    # data (with G=3 the third process joins 1 with weight 0, reporting nothing) and 2 in process 2
    want = [[0], [1], [2]] if mode == "gather" else [[0, 1], [0, 1], [0, 2]]
    assert [r["trained"] for r in ranks] == want[:groups]


def test_two_processes_train_identical_subpolicies_each_on_its_own_groups(tmp_path):
    ok(run(torchrun(WORKER, "train", str(tmp_path), "env=movement_bandits", *SMALL, "schedule.n_tasks=6")))
    got = [th.load(tmp_path / f"params_rank{r}.pt") for r in (0, 1)]
    assert [g["groups"] for g in got] == [[0], [1]]
    for k, (a, b) in enumerate(zip(got[0]["params"], got[1]["params"], strict=True)):
        for name in a:
            assert th.equal(a[name], b[name]), (k, name)
    run_dir = tmp_path / "run"
    ckpt = checkpoint.latest(run_dir)
    assert {"sub0.zip", "sub1.zip", "master_g0.zip", "master_g1.zip", "resume.pkl", "resume_rank1.pkl"} <= \
        {f.name for f in ckpt.iterdir()}
    state = checkpoint.read_state(ckpt)
    assert state["processes"] == 2 and [c["group"] for c in state["groups"]] == [0, 1]
    assert all(c["task"] is not None for c in state["groups"])  # rank 1's group's task reached rank 0
    metrics = read_metrics(run_dir)
    steps = [r["global_step"] for r in metrics if "episode_return" in r]
    assert steps == [(i + 1) * 2 * 200 for i in range(len(steps))]  # one step axis: both groups' steps
    first = next(r for r in metrics if "episode_return" in r)
    assert {"group0/episode_return", "group1/episode_return", "group1/master/entropy"} <= set(first)
    assert sorted(r["task/index"] for r in metrics if "task/index" in r) == list(range(6))
    assert got[0]["summary"]["processes"] == 2 and got[0]["summary"]["tasks_done"] == 6


def test_balanced_masters_move_between_processes_and_change_nothing(tmp_path):
    """``distributed.balance_masters``: the process without a sub-policy to train takes masters of the one that
    has; the run is the same, bit for bit (metrics, sub-policies, masters), as with every master kept home."""
    common = ("env=movement_bandits", *SMALL, "schedule.n_tasks=6")
    for on in ("true", "false"):
        ok(run(torchrun(WORKER, "train", str(tmp_path / on), *common, f"distributed.balance_masters={on}")))
    moved = [r.get("dist/masters_moved") for r in read_metrics(tmp_path / "true" / "run")]
    assert max(m for m in moved if m is not None) >= 1  # masters did move
    assert all(r.get("dist/masters_moved", 0) == 0 for r in read_metrics(tmp_path / "false" / "run"))
    assert rows(tmp_path / "true" / "run") == rows(tmp_path / "false" / "run")  # all but timings and moves
    got = [th.load(tmp_path / on / "params_rank0.pt") for on in ("true", "false")]
    for a, b in zip(got[0]["params"], got[1]["params"], strict=True):
        assert all(th.equal(a[name], b[name]) for name in a)
    last = [checkpoint.latest(tmp_path / on / "run") for on in ("true", "false")]
    for name in ("master_g0.zip", "master_g1.zip"):
        a, b = (PPO.load(ckpt / name, device="cpu").policy.state_dict() for ckpt in last)
        assert all(th.equal(a[k], b[k]) for k in a), name


def test_balance_hands_masters_from_the_busiest_process_to_the_least_busy():
    from mlsh.learners import balance

    # process 0 trains the only sub-policy (0.3 s), each has 5 masters of 0.065 s: two of 0's move to 1
    assert balance([0.3, 0.0], [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]], 0.065) == {4: 1, 3: 1}
    assert balance([0.2, 0.2], [[0, 1], [2, 3]], 0.05) == {}  # even already
    assert balance([1.0, 0.0], [[], [1]], 0.1) == {}  # the busiest has no master to give
    assert balance([0.1, 0.0], [[0], [1]], 0.1) == {}  # moving one would only swap the loads
    # three processes: the two idle ones share all of the busy one's masters, in turn
    assert balance([0.4, 0.0, 0.0], [[0, 1, 2], [3], [4]], 0.1) == {2: 1, 1: 2, 0: 1}


def test_observation_statistics_are_merged_over_processes(tmp_path):
    """AntTwoWalk filters observations: after the run both processes hold the statistics of every process's
    observations, identical."""
    ok(run(torchrun(WORKER, "train", str(tmp_path), "env=ant_two_walk", "schedule.n_groups=2", "schedule.n_envs=2",
                    "schedule.rollout_steps=400", "schedule.warmup_iters=1", "schedule.joint_iters=1",
                    "schedule.n_tasks=2", "schedule.stagger=wrapped", "media.maps_every=0", "media.video=false")))
    got = [th.load(tmp_path / f"params_rank{r}.pt", weights_only=False) for r in (0, 1)]
    (m0, v0, c0), (m1, v1, c1) = (g["obs_stats"] for g in got)
    assert (m0 == m1).all() and (v0 == v1).all() and c0 == c1
    steps = got[0]["summary"]["global_step"]  # every primitive step of both processes
    assert steps <= c0 < steps + 100  # each observation once (plus the first ones after resets)


def test_merged_statistics_equal_those_of_all_the_data():
    from mlsh.groups import TrackedRMS

    rng = np.random.default_rng(0)
    data = [rng.normal(size=(50, 3)) + i for i in range(2)]
    procs = [TrackedRMS(shape=(3,)) for _ in data]
    for rms, x in zip(procs, data, strict=True):
        rms.update(x[:20])
        rms.update(x[20:])
    fresh = [(r.fresh.mean, r.fresh.var, r.fresh.count) for r in procs]
    for rms in procs:
        rms.merge(fresh)
    whole = TrackedRMS(shape=(3,))
    whole.update(np.concatenate(data))
    for rms in procs:
        assert np.allclose(rms.mean, whole.mean) and np.allclose(rms.var, whole.var) and rms.count == whole.count
        assert rms.fresh.count == 0  # the next merge adds only what comes after


def test_an_exception_in_one_process_stops_the_others_within_seconds(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "FAIL_RANK1_AFTER": "12"}
    t0 = time.time()
    proc = subprocess.run(torchrun(WORKER, "train", str(tmp_path), "env=movement_bandits", *SMALL,
                                   "schedule.n_tasks=400"), cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode != 0 and time.time() - t0 < 120
    assert "RuntimeError: injected failure" in proc.stderr
    assert "rank 0 of 2:" in proc.stderr and "another process of the run is gone" in proc.stderr
    checkpoint.verify(checkpoint.latest(tmp_path / "run"))


def test_the_parameter_check_names_the_rank_and_tensor_that_drifted(tmp_path):
    ok(run(torchrun(WORKER, "drift", str(tmp_path))))
    for r in (0, 1):
        said = (tmp_path / f"drift_rank{r}.txt").read_text().splitlines()
        assert said[0] == "identical"
        assert "rank 1's sub-policy 1 parameter 'bias' differs from rank 0's" in said[1]


def test_run_py_under_torchrun_writes_one_run_folder_from_rank_0(tmp_path):
    scratch = tmp_path / "tmp"  # the runs' own temp folder, so parallel tests cannot touch what is checked
    scratch.mkdir()
    proc = ok(run(torchrun("run.py", *SMALL, "schedule.n_tasks=4", "logger.mode=offline", "progress_bar=false",
                           f"hydra.run.dir={tmp_path / 'run'}"), timeout=300, TMPDIR=str(scratch)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "tmp"]
    run_dir = tmp_path / "run"
    assert (run_dir / ".hydra" / "config.yaml").exists() and (run_dir / "provenance.json").exists()
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1  # one W&B run, rank 0's
    assert proc.stdout.count("run folder:") == 1 and "processes=2" in proc.stdout
    assert not list(scratch.glob("mlsh-rank*"))  # rank 1's scratch folder for Hydra is gone
    assert len([r for r in read_metrics(run_dir) if "task/index" in r]) == 4


def test_a_multirun_of_distributed_runs(tmp_path):
    ok(run(torchrun("run.py", "-m", *SMALL, "schedule.n_tasks=2", "logger.mode=disabled", "progress_bar=false",
                    "seed=0,1", f"hydra.sweep.dir={tmp_path / 'sweep'}"), timeout=300))
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert [j.split("_")[0] for j in jobs] == ["0", "1"] and [j[-6:] for j in jobs] == ["seed=0", "seed=1"]
    for job in jobs:
        state = checkpoint.read_state(checkpoint.latest(tmp_path / "sweep" / job))
        assert state["processes"] == 2 and state["tasks_done"] == 2


def test_groups_that_do_not_spread_evenly_are_a_config_error(tmp_path):
    proc = run(torchrun("run.py", "schedule=smoke", "schedule.n_groups=3", "logger.mode=disabled",
                        f"hydra.run.dir={tmp_path / 'run'}"))
    assert proc.returncode != 0
    assert "schedule.n_groups=3 task groups cannot be spread evenly over 2 processes" in proc.stderr
    # no traceback through our code (torchrun prints its own)
    assert f'File "{ROOT / "mlsh"}' not in proc.stderr and f'File "{ROOT / "run.py"}' not in proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["0", "abc"])
def test_a_bad_timeout_is_a_config_error_before_the_processes_join(tmp_path, value):
    """The process group is joined before the config is validated: a bad timeout must still end as the config
    error that names it, with no run folder left, not as a failure inside torch."""
    proc = run(torchrun("run.py", "schedule=smoke", "schedule.n_groups=2", f"distributed.timeout_s={value}",
                        "logger.mode=disabled", f"hydra.run.dir={tmp_path / 'run'}"))
    assert proc.returncode != 0
    assert f"config error: distributed.timeout_s must be a number > 0, got {value if value == '0' else repr(value)}" \
        in proc.stderr, proc.stderr[-3000:]
    assert f'File "{ROOT / "mlsh"}' not in proc.stderr and f'File "{ROOT / "run.py"}' not in proc.stderr
    assert not (tmp_path / "run").exists()


def _workers(agent: int) -> dict[int, int]:
    """rank -> pid of the worker processes a torchrun agent started."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            parent = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
            env = dict(e.split("=", 1) for e in open(f"/proc/{pid}/environ").read().split("\0") if "=" in e)
        except OSError:
            continue
        if parent == agent and "RANK" in env:
            found[int(env["RANK"])] = int(pid)
    return found


def _start(tmp_path, *overrides, cmd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    cmd = cmd or torchrun("run.py", *SMALL, "logger.mode=disabled", "progress_bar=false", *overrides,
                          f"hydra.run.dir={tmp_path / 'run'}")
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_checkpoints(run_dir: Path, n: int, proc, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if len(checkpoint.list_checkpoints(run_dir)) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {n} checkpoints in {timeout} s: {proc.communicate()}")


def test_a_killed_process_ends_the_run_with_a_named_error_and_a_good_checkpoint(tmp_path):
    proc = _start(tmp_path, "schedule.n_tasks=400")
    _wait_for_checkpoints(tmp_path / "run", 2, proc)
    workers = _workers(proc.pid)
    assert sorted(workers) == [0, 1]
    os.kill(workers[1], signal.SIGKILL)
    killed = time.time()
    out, err = proc.communicate(timeout=120)
    assert time.time() - killed < 60  # no hang
    assert proc.returncode != 0
    assert "process 0 of 2: error: rank 0 of 2:" in err and "another process of the run is gone" in err
    assert "rank      : 1" in err  # torchrun names the rank that failed
    good = checkpoint.latest(tmp_path / "run")
    checkpoint.verify(good)


def test_sigterm_then_resume_continues_a_two_process_run_exactly(tmp_path):
    ok(run(torchrun("run.py", *SMALL, "schedule.n_tasks=16", "logger.mode=disabled", "progress_bar=false",
                    f"hydra.run.dir={tmp_path / 'whole'}")))
    proc = _start(tmp_path, "schedule.n_tasks=16")
    _wait_for_checkpoints(tmp_path / "run", 3, proc)
    proc.send_signal(signal.SIGTERM)  # torchrun hands it to both processes
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "SIGTERM: checkpointing" in err, err[-3000:]
    done = checkpoint.read_state(checkpoint.latest(tmp_path / "run"))["tasks_done"]
    assert done < 16
    ok(run(torchrun("-m", "mlsh.resume", str(tmp_path / "run"))))
    assert rows(tmp_path / "run") == rows(tmp_path / "whole")


def test_resuming_with_another_number_of_processes_is_refused(tmp_path):
    ok(run(torchrun("run.py", *SMALL, "schedule.n_tasks=2", "logger.mode=disabled", "progress_bar=false",
                    f"hydra.run.dir={tmp_path / 'run'}")))
    proc = run([sys.executable, "-m", "mlsh.resume", str(tmp_path / "run"), "--n-tasks", "4"])
    assert proc.returncode != 0
    assert "is of a run over 2 processes: resume it with as many" in proc.stderr
    assert json.loads((checkpoint.latest(tmp_path / "run") / "state.json").read_text())["tasks_done"] == 2


@pytest.mark.parametrize("weighting", ["samples"])
def test_settings_that_cannot_be_spread_are_refused_up_front(compose, weighting):
    from mlsh.config import ConfigError, validate

    with pytest.raises(ConfigError, match="group_weighting=samples is single-process only"):
        validate(compose("schedule.n_groups=2", f"algo.subpolicy.group_weighting={weighting}"), processes=2)
    with pytest.raises(ConfigError, match="target_kl=0.01 stops PPO's epochs early"):
        validate(compose("schedule.n_groups=2", "algo.subpolicy.ppo.target_kl=0.01",
                         "distributed.subpolicy_update=allreduce"), processes=2)
    # gathered (auto with 2 processes and 2 sub-policies), one process trains each sub-policy: its own early stop
    # keeps nobody waiting; auto with 4 processes all-reduces
    validate(compose("schedule.n_groups=2", "algo.subpolicy.ppo.target_kl=0.01"), processes=2)
    with pytest.raises(ConfigError, match="target_kl=0.01 stops PPO's epochs early"):
        validate(compose("schedule.n_groups=4", "algo.subpolicy.ppo.target_kl=0.01"), processes=4)
    validate(compose("schedule.n_groups=2", f"algo.subpolicy.group_weighting={weighting}"), processes=1)
    # the shared baseline's one policy steps in every process at once; scratch's policies are each one process's
    with pytest.raises(ConfigError, match="algo.policy.ppo.target_kl=0.01 stops PPO's epochs early"):
        validate(compose("algo=shared", "schedule.n_groups=2", "+algo.policy.ppo.target_kl=0.01"), processes=2)
    validate(compose("algo=scratch", "schedule.n_groups=2", "+algo.policy.ppo.target_kl=0.01"), processes=2)


def test_the_submitit_launcher_starts_one_run_over_its_tasks(tmp_path):
    """The SLURM path's local stand-in: hydra-submitit-launcher's submitit_local with 2 tasks per node; each task
    is one process of the run (the rendezvous variables come from submitit's job environment)."""
    ok(run([sys.executable, "run.py", "-m", "hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2",
            *SMALL, "schedule.n_tasks=4", "logger.mode=disabled", "progress_bar=false",
            f"hydra.sweep.dir={tmp_path / 'sweep'}"], timeout=600))
    (job,) = [p for p in (tmp_path / "sweep").iterdir() if p.is_dir() and p.name.startswith("0_")]
    state = checkpoint.read_state(checkpoint.latest(job))
    assert state["processes"] == 2 and state["tasks_done"] == 4
    assert (checkpoint.latest(job) / "resume_rank1.pkl").exists()


def test_observation_statistics_stay_merged_after_a_resume(tmp_path):
    """A resume replaces the statistics object (the checkpoint's): the merge must follow it, or each process goes
    on with its own statistics."""
    ant = ("env=ant_two_walk", "schedule.n_groups=2", "schedule.n_envs=2", "schedule.rollout_steps=400",
           "schedule.warmup_iters=1", "schedule.joint_iters=1", "schedule.stagger=wrapped", "logger.mode=disabled",
           "progress_bar=false", "media.maps_every=0", "media.video=false")
    ok(run(torchrun("run.py", *ant, "schedule.n_tasks=2", f"hydra.run.dir={tmp_path / 'run'}")))
    ok(run(torchrun("-m", "mlsh.resume", str(tmp_path / "run"), "--n-tasks", "6")))
    ckpt = checkpoint.latest(tmp_path / "run")
    assert checkpoint.read_state(ckpt)["tasks_done"] == 6
    stats = []
    for name in ("resume.pkl", "resume_rank1.pkl"):
        layers = dict(snapshot.load(ckpt, name)["vec_layers"])
        stats.append(layers["TaskVecNormalize"]["obs_rms"])
    assert (stats[0].mean == stats[1].mean).all() and (stats[0].var == stats[1].var).all()
    assert stats[0].count == stats[1].count
    assert stats[0].count >= checkpoint.read_state(ckpt)["global_step"]  # both processes' steps, before and after


def test_shutdown_joins_the_process_groups_threads(tmp_path):
    """The first optimizer imports torch._dynamo, which kept references to a process group made before it; gloo's
    threads then outlived ``shutdown`` and now and then aborted the interpreter's teardown (SIGABRT, "terminate
    called without an active exception") after a finished two-process run. After ``shutdown`` none is left."""
    ok(run(torchrun(WORKER, "teardown", str(tmp_path))))
    for rank in range(2):
        threads = json.loads((tmp_path / f"threads_rank{rank}.json").read_text())
        assert any("gloo" in name for name in threads["during"]), threads  # the check sees gloo's threads
        assert not any("gloo" in name for name in threads["after"]), threads


def test_scaling_prints_each_repeat_with_its_own_efficiency():
    """The benchmark's per-repeat line: that repeat's rates (not the best so far), each run of more processes with
    its efficiency against the same repeat's fewest-process run."""
    from mlsh.benchmarks.scaling import repeat_line

    line = repeat_line({"P=1": 24000.0, "P=2 gather": 41000.0, "2 independent": 48000.0, "2 copies": 47000.0}, 1)
    assert line == ("P=1 24,000 steps/s, P=2 gather 41,000 steps/s (0.85), 2 independent 48,000 steps/s (1.00), "
                    "2 copies 47,000 steps/s (0.98)")
    assert repeat_line({"P=2": 20000.0, "P=4 allreduce": 36000.0}, 2) == \
        "P=2 20,000 steps/s, P=4 allreduce 36,000 steps/s (0.90)"


SUBMITIT_LIKE = '''
import os, runpy, signal, sys
rank = int(os.environ["RANK"])
def handler(signum, frame):  # as submitit's checkpoint_and_try_requeue: rank 0 requeues and exits, others return
    if rank == 0:
        print("[launcher] rank 0: job requeued, exiting", file=sys.stderr, flush=True)
        sys.exit(-1)
    print(f"[launcher] rank {rank}: not requeuing", file=sys.stderr, flush=True)
signal.signal(signal.SIGUSR2, handler)
sys.path.insert(0, os.getcwd())
sys.argv = ["run.py", *sys.argv[1:]]
runpy.run_path("run.py", run_name="__main__")
'''


def test_a_launcher_that_requeues_from_rank_0_stops_every_rank_after_the_checkpoint(tmp_path):
    """SIGUSR2 reaches every process (SLURM's --signal); the launcher's handler requeues the job and exits on rank 0
    only (submitit's does nothing elsewhere): every rank stops with it, none trains on into a lost peer."""
    wrapper = tmp_path / "launcher.py"
    wrapper.write_text(SUBMITIT_LIKE)
    proc = _start(tmp_path, cmd=torchrun(str(wrapper), *SMALL, "schedule.n_tasks=400", "logger.mode=disabled",
                                         "progress_bar=false", f"hydra.run.dir={tmp_path / 'run'}"))
    _wait_for_checkpoints(tmp_path / "run", 2, proc)
    workers = _workers(proc.pid)
    assert sorted(workers) == [0, 1]
    for pid in workers.values():
        os.kill(pid, signal.SIGUSR2)
    signalled = time.time()
    out, err = proc.communicate(timeout=120)
    assert time.time() - signalled < 60
    assert "SIGUSR2: checkpoint written; handing over to handler" in err
    assert "[launcher] rank 0: job requeued, exiting" in err
    assert "another process of the run is gone" not in err, err[-3000:]
    assert f"exitcode  : {128 + signal.SIGUSR2.value}" in err  # rank 1 ended as stopped by the signal
    latest = checkpoint.latest(tmp_path / "run")
    checkpoint.verify(latest)
    assert checkpoint.read_state(latest)["tasks_done"] < 400


def test_a_collective_that_times_out_is_named_as_such_not_as_a_dead_process():
    from mlsh import distributed

    with pytest.raises(distributed.PeerLost, match=r"all_gather_object failed, no answer within "
                                                   r"distributed.timeout_s=300 s: another process of the run is slow"):
        with distributed._guard("all_gather_object"):
            raise RuntimeError("[gloo/transport/tcp/unbound_buffer.cc:129] Timed out waiting 3000ms for send operation")
    with pytest.raises(distributed.PeerLost, match="broadcast failed, another process of the run is gone"):
        with distributed._guard("broadcast"):
            raise RuntimeError("[gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:26344.")
