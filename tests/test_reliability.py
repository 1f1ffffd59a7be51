"""Runs that survive: exact resume after SIGKILL and SIGTERM, corrupt checkpoints, non-finite values, W&B faults and
bad input (issue 10). Subprocess runs are the real thing: a process killed at a random moment and resumed."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO

from mlsh import checkpoint, faults, snapshot
from mlsh.config import ConfigError, validate
from mlsh.runlog import RunLogger, read_metrics
from mlsh.runlog import wandb_local_history as wandb_history
from mlsh.train import meta_train
from tests.conftest import ROOT

TIMING = ("steps_per_second", "time_minutes")
# a run of about 10 s: 24 tasks of 2 iterations, checkpoints every task
BASE = ("schedule=smoke", "schedule.joint_iters=2")
RUN = (*BASE, "schedule.n_tasks=24", "progress_bar=false")


def start(run_dir, *overrides, mode="disabled"):
    return subprocess.Popen([sys.executable, "run.py", *RUN, f"logger.mode={mode}", *overrides,
                             f"hydra.run.dir={run_dir}"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "WANDB_MODE": mode})


def finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def resume(run_dir):
    proc = subprocess.run([sys.executable, "-m", "mlsh.resume", str(run_dir)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def rows(run_dir):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(run_dir)]


def weights(folder):
    return {f.name: PPO.load(f, device="cpu").policy.state_dict() for f in sorted(folder.glob("*.zip"))}


def assert_same_run(a, b):
    ra, rb = rows(a), rows(b)
    assert len(ra) == len(rb)
    for i, (x, y) in enumerate(zip(ra, rb, strict=True)):
        assert x == y, f"row {i} differs"
    last_a, last_b = checkpoint.latest(a), checkpoint.latest(b)
    assert last_a.name == last_b.name
    wa, wb = weights(last_a), weights(last_b)
    assert wa.keys() == wb.keys() and wa
    for name in wa:
        for key, tensor in wa[name].items():
            assert th.equal(tensor, wb[name][key]), f"{name}: {key} differs"


def wait_for_rows(run_dir, n, proc, timeout=120):
    path = run_dir / "metrics.jsonl"
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"the run did not log {n} rows in time (exit {proc.poll()})")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs: one group (with W&B offline) and two task groups."""
    root = tmp_path_factory.mktemp("reference")
    procs = {"one": start(root / "one", mode="offline"),
             "groups": start(root / "groups", "schedule.n_groups=2", "schedule.stagger=original")}
    for proc in procs.values():
        code, out = finish(proc)
        assert code == 0, out[-3000:]
    return root


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_at_a_random_moment_then_resume_is_identical(reference, tmp_path, seed):
    """Killed after a random number of logged rows (mid-task, between tasks or while a checkpoint is written),
    then resumed: metric for metric and weight for weight the uninterrupted run; W&B holds each row once."""
    kill_after = int(np.random.default_rng(seed).integers(5, 60))
    proc = start(tmp_path, mode="offline")
    wait_for_rows(tmp_path, kill_after, proc)
    time.sleep(float(np.random.default_rng(seed).uniform(0, 0.3)))
    proc.kill()
    proc.communicate()
    assert len(read_metrics(tmp_path)) < len(read_metrics(reference / "one")), "killed too late"
    resume(tmp_path)
    assert_same_run(reference / "one", tmp_path)
    steps = [r["global_step"] for r in wandb_history(tmp_path)]
    assert steps == [r["global_step"] for r in read_metrics(tmp_path)]  # every row once, in order


def test_sigkill_with_task_groups_then_resume_is_identical(reference, tmp_path):
    proc = start(tmp_path, "schedule.n_groups=2", "schedule.stagger=original")
    wait_for_rows(tmp_path, 23, proc)
    proc.kill()
    proc.communicate()
    resume(tmp_path)
    assert_same_run(reference / "groups", tmp_path)


def test_kill_while_a_checkpoint_is_written_leaves_the_previous_one(compose, tmp_path, monkeypatch):
    cfg = compose(*BASE, "schedule.n_tasks=4", "logger.mode=disabled")
    meta_train(cfg, tmp_path / "full", progress=False)
    calls = {"n": 0}
    real = snapshot.save

    def dies_on_third(state, folder):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as a kill: the zips are written, resume.pkl and state.json are not
        real(state, folder)

    monkeypatch.setattr(snapshot, "save", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        meta_train(cfg, tmp_path / "cut", progress=False)
    monkeypatch.setattr(snapshot, "save", real)
    assert (tmp_path / "cut" / "checkpoints" / "task_00002.tmp").exists()
    assert checkpoint.latest(tmp_path / "cut").name == "task_00001"
    meta_train(cfg, tmp_path / "cut", progress=False, resume=True)
    assert not (tmp_path / "cut" / "checkpoints" / "task_00002.tmp").exists()
    assert_same_run(tmp_path / "full", tmp_path / "cut")


@pytest.mark.parametrize("groups", [1, 2])
def test_sigterm_checkpoints_the_iteration_and_resume_is_identical(reference, tmp_path, groups):
    extra = ("schedule.n_groups=2", "schedule.stagger=original") if groups == 2 else ()
    proc = start(tmp_path, *extra)
    wait_for_rows(tmp_path, 20, proc)
    proc.send_signal(signal.SIGTERM)
    code, out = finish(proc)
    assert code == 128 + signal.SIGTERM, out[-3000:]
    assert f"continue with: python -m mlsh.resume {tmp_path}" in out
    state = checkpoint.read_state(checkpoint.latest(tmp_path))
    assert state["global_step"] == read_metrics(tmp_path)[-1]["global_step"]  # nothing after the checkpoint
    resume(tmp_path)
    assert_same_run(reference / ("groups" if groups == 2 else "one"), tmp_path)


def test_a_corrupt_checkpoint_falls_back_to_the_previous_good_one(compose, tmp_path):
    cfg = compose(*BASE, "schedule.n_tasks=3", "logger.mode=offline")
    meta_train(cfg, tmp_path / "full", progress=False)
    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    sub0 = tmp_path / "cut" / "checkpoints" / "task_00002" / "sub0.zip"
    sub0.write_bytes(sub0.read_bytes()[:100])  # truncated
    with pytest.warns(UserWarning, match=r"skipping checkpoint task_00002: .*sub0.zip is corrupt"):
        assert checkpoint.latest(tmp_path / "cut").name == "task_00001"
    with pytest.raises(checkpoint.CheckpointError, match="sub0.zip"):
        checkpoint.resolve(tmp_path / "cut" / "checkpoints" / "task_00002")  # named explicitly: no fallback
    with pytest.warns(UserWarning, match="sub0.zip"):
        meta_train(cfg, tmp_path / "cut", progress=False, resume=True)
    assert_same_run(tmp_path / "full", tmp_path / "cut")
    assert (tmp_path / "cut" / "checkpoints" / "task_00002.bad" / "sub0.zip").exists()  # kept, set aside
    # W&B held the rows up to the corrupt checkpoint already: the redone ones are not sent twice
    expected = [r["global_step"] for r in read_metrics(tmp_path / "cut")]
    assert wandb_steps_once_written(tmp_path / "cut", expected) == expected


def test_a_damaged_state_file_is_set_aside_and_checkpoints_that_are_gone_stop_the_resume(compose, tmp_path):
    """A newest checkpoint whose state.json is torn is skipped with a warning and kept as .bad, not overwritten;
    a run folder whose checkpoints were moved away is refused, its metrics untouched, not started over."""
    cfg = compose(*BASE, "schedule.n_tasks=3", "logger.mode=disabled")
    meta_train(cfg, tmp_path / "full", progress=False)
    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    newest = tmp_path / "cut" / "checkpoints" / "task_00002"
    (newest / "state.json").write_text((newest / "state.json").read_text()[:100])
    (newest / "mine.txt").write_text("kept")
    with pytest.warns(UserWarning, match=r"skipping checkpoint task_00002: .*state.json is missing or corrupt"):
        assert checkpoint.latest(tmp_path / "cut").name == "task_00001"
    with pytest.warns(UserWarning, match="skipping checkpoint task_00002"):
        meta_train(cfg, tmp_path / "cut", progress=False, resume=True)
    assert_same_run(tmp_path / "full", tmp_path / "cut")
    assert (tmp_path / "cut" / "checkpoints" / "task_00002.bad" / "mine.txt").read_text() == "kept"

    shutil.copytree(tmp_path / "full", tmp_path / "unchecked")  # a manifest deleted: the files cannot be checked
    (tmp_path / "unchecked" / "checkpoints" / "task_00002" / "manifest.json").unlink()
    with pytest.warns(UserWarning, match=r"skipping checkpoint task_00002: .*manifest.json is missing"):
        assert checkpoint.latest(tmp_path / "unchecked").name == "task_00001"

    shutil.copytree(tmp_path / "full", tmp_path / "moved")
    (tmp_path / "moved" / "checkpoints").rename(tmp_path / "elsewhere")
    metrics = (tmp_path / "moved" / "metrics.jsonl").read_bytes()
    with pytest.raises(FileNotFoundError, match=r"shows at least 2 checkpoints written, but .*checkpoints holds none"):
        meta_train(cfg, tmp_path / "moved", progress=False, resume=True)
    assert (tmp_path / "moved" / "metrics.jsonl").read_bytes() == metrics


def test_signals_are_forwarded_to_a_launchers_handlers_sigusr2_first():
    from mlsh.train import _StopSignals

    calls = []
    old = {sig: signal.getsignal(sig) for sig in _StopSignals.SIGNALS}
    try:
        signal.signal(signal.SIGUSR2, lambda s, f: calls.append("requeue"))  # as submitit's
        signal.signal(signal.SIGTERM, lambda s, f: calls.append("bypass"))
        with _StopSignals() as signals:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGUSR2)
            assert signals.pending == ["SIGTERM", "SIGUSR2"] and not calls  # only flagged until the checkpoint
            assert signals.forward(["SIGTERM", "SIGUSR2"]) is None  # both launcher handlers returned: go on
            assert calls == ["requeue", "bypass"] and signals.pending == []
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        # Python's own Ctrl-C handler, as in a terminal: a shell without job control starts background jobs with
        # SIGINT ignored, and an ignored signal stays ignored (checked below)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with _StopSignals() as signals:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGUSR2)
            assert signals.forward(["SIGTERM"]) == "SIGTERM"  # no launcher handler: the run stops
            assert signals.pending == ["SIGUSR2"]  # arrived after the decision: left for the next iteration
            signals.pending.clear()
            os.kill(os.getpid(), signal.SIGINT)
            # a signal may reach another thread of the process first and its handler then run a moment later; two
            # SIGINTs pending at once would run it once: wait for the first before the second
            end = time.time() + 2.0
            while signals.pending != ["SIGINT"] and time.time() < end:
                time.sleep(0.01)
            assert signals.pending == ["SIGINT"]
            with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C stops at once
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(2.0)  # the handler raises here at the latest
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def test_an_ignored_signal_stays_ignored():
    from mlsh.train import _StopSignals

    old = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # e.g. a job started in the background by a script
        with _StopSignals() as signals:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
            assert signals.pending == []
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, old)


def test_a_run_folder_killed_before_its_first_checkpoint_is_started_over_by_run_py(reference, tmp_path):
    proc = start(tmp_path, mode="offline")
    wait_for_rows(tmp_path, 1, proc)
    proc.kill()
    proc.communicate()
    assert not checkpoint.list_checkpoints(tmp_path)
    code, out = finish(start(tmp_path, mode="offline"))  # the same command again, as a requeued job
    assert code == 0 and "holds a run: resuming it" in out and "starting the run over" in out
    assert_same_run(reference / "one", tmp_path)


def test_a_torn_last_metrics_line_is_dropped_with_a_warning(compose, tmp_path):
    cfg = compose(*BASE, "schedule.n_tasks=2", "logger.mode=disabled")
    meta_train(cfg, tmp_path, progress=False)
    n = len(read_metrics(tmp_path))
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"global_step": 9999, "episode_ret')
    with pytest.warns(UserWarning, match="torn last line"):
        assert len(read_metrics(tmp_path)) == n
    cfg.schedule.n_tasks = 3
    with pytest.warns(UserWarning, match="torn last line"):
        meta_train(cfg, tmp_path, progress=False, resume=True)
    assert all(r["global_step"] != 9999 for r in read_metrics(tmp_path))
    with open(tmp_path / "metrics.jsonl", "r+") as f:  # a bad line in the middle is an error
        lines = f.read().splitlines()
        f.seek(0)
        f.write("\n".join([lines[0], "{bad", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match="metrics.jsonl:2 is not valid JSON"):
        read_metrics(tmp_path)


def test_an_injected_non_finite_loss_stops_the_run_and_the_latest_checkpoint_stays_finite(compose, tmp_path,
                                                                                          monkeypatch):
    from mlsh import subpolicies

    cfg = compose(*BASE, "schedule.n_tasks=6", "logger.mode=disabled")
    real, calls = subpolicies.SubPolicyLearner.batches, {"n": 0}

    def poisoned(self, traj, groups=None, group_ids=None):
        out = real(self, traj, groups, group_ids)
        calls["n"] += 1
        if calls["n"] == 5:
            k = next(k for k, batch in enumerate(out) if batch is not None)
            out[k]["advantages"][:] = np.nan  # a NaN loss in the fifth sub-policy update
        return out

    monkeypatch.setattr(subpolicies.SubPolicyLearner, "batches", poisoned)
    with pytest.raises(faults.NonFiniteError, match=r"non-finite gradient in sub-policy \d .*at global step") as err:
        meta_train(cfg, tmp_path, progress=False)
    step = int(str(err.value).split("at global step ")[1].split(",")[0])
    assert "nothing was checkpointed after it" in str(err.value)
    last = checkpoint.latest(tmp_path)
    assert checkpoint.read_state(last)["global_step"] <= step
    for name, params in weights(last).items():
        assert all(th.isfinite(p).all() for p in params.values()), name
    assert max(r["global_step"] for r in read_metrics(tmp_path)) <= step  # the bad iteration was not logged


def test_non_finite_observations_weights_and_losses_are_named():
    with pytest.raises(faults.NonFiniteError, match=r"non-finite observation in env\(s\) \[1\]"):
        faults.check_array(np.array([[0.0, 1.0], [np.nan, 2.0]]), "observation")
    faults.check_array(np.array([1, 2]), "reward")  # integers are always finite
    with pytest.raises(faults.NonFiniteError, match="train/value_loss in group 3"):
        faults.check_records({"train/value_loss": float("inf"), "train/explained_variance": float("nan")},
                             "group 3")
    faults.check_records({"train/explained_variance": float("nan")}, "x")  # NaN by design when returns are flat


def test_wandb_without_network_falls_back_to_offline_in_seconds(tmp_path):
    env = {**os.environ, "WANDB_MODE": "online", "WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_API_KEY": "x" * 40}
    t0 = time.time()
    proc = subprocess.run([sys.executable, "run.py", "schedule=smoke", "logger.mode=online", "progress_bar=false",
                           f"hydra.run.dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no connection to its server; logging offline instead" in proc.stderr
    assert time.time() - t0 < 60
    assert len(wandb_history(tmp_path)) == len(read_metrics(tmp_path))


def test_an_unwritable_wandb_folder_warns_and_training_goes_on(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "wandb").write_text("a file where W&B wants a folder")
    code, out = finish(start(tmp_path, "schedule.n_tasks=2", mode="offline"))
    assert code == 0, out[-3000:]
    assert "W&B is off for this run" in out
    assert [r["task/index"] for r in read_metrics(tmp_path) if "task/index" in r] == [0, 1]


def wandb_core_children(pid: int) -> list[int]:
    """The W&B service processes (wandb-core) that process ``pid`` started."""
    found = []
    for child in filter(str.isdigit, os.listdir("/proc")):
        try:
            parent = int(open(f"/proc/{child}/stat").read().rsplit(")", 1)[1].split()[1])
            if parent == pid and b"wandb-core" in open(f"/proc/{child}/cmdline", "rb").read():
                found.append(int(child))
        except OSError:
            continue
    return found


def test_wandb_dying_mid_run_does_not_stop_training(tmp_path):
    proc = start(tmp_path, mode="offline")
    wait_for_rows(tmp_path, 10, proc)
    cores = wandb_core_children(proc.pid)
    assert cores, "the run has no W&B service process to kill"
    for pid in cores:
        os.kill(pid, signal.SIGKILL)
    code, out = finish(proc)
    assert code == 0, out[-3000:]
    assert "W&B failed" in out and "Traceback" not in out
    assert [r["task/index"] for r in read_metrics(tmp_path) if "task/index" in r] == list(range(24))


def test_wandb_failing_on_log_warns_once_and_keeps_the_metrics_file(compose, tmp_path, capsys):
    logger = RunLogger(tmp_path, compose("logger.mode=disabled"))

    class Broken:
        id = "x"

        def log(self, row):
            raise OSError("No space left on device")

    logger.wandb, logger._group = Broken(), None
    logger.log({"a": 1.0}, 10)
    logger.commit()
    logger.log({"a": 2.0}, 20)
    logger.commit()
    logger.close()
    assert capsys.readouterr().err.count("W&B failed (OSError: No space left on device)") == 1
    assert [r["a"] for r in read_metrics(tmp_path)] == [1.0, 2.0]


def test_a_resumed_run_keeps_its_wandb_group_and_run(compose, tmp_path):
    cfg = compose(*BASE, "schedule.n_tasks=1", "logger.mode=offline")
    meta_train(cfg, tmp_path, group="sweep-7", progress=False)
    first = json.loads((tmp_path / "wandb_run.json").read_text())
    cfg.schedule.n_tasks = 2
    time.sleep(1.1)  # W&B names an offline run's folder by the second it starts: two folders, as in real use
    meta_train(cfg, tmp_path, progress=False, resume=True)
    again = json.loads((tmp_path / "wandb_run.json").read_text())
    assert again == {**first, "rows_sent": len(read_metrics(tmp_path))} and again["group"] == "sweep-7"
    assert len(list((tmp_path / "wandb").glob(f"offline-run-*-{first['id']}"))) == 2
    expected = [r["global_step"] for r in read_metrics(tmp_path)]
    assert wandb_steps_once_written(tmp_path, expected) == expected


def wandb_steps_once_written(run_dir, expected, timeout=30.0):
    """The global steps of W&B's local log of ``run_dir``, read again until they are ``expected`` or ``timeout``
    seconds pass: W&B's service, shared by the runs of this process, may still be writing the last run's log when
    ``finish`` has returned (seen once under load: a resumed run's rows missing)."""
    deadline = time.monotonic() + timeout
    while True:
        steps = [r["global_step"] for r in wandb_history(run_dir)]
        if steps == expected or time.monotonic() > deadline:
            return steps
        time.sleep(0.2)


def test_max_minutes_counts_the_time_before_a_resume(compose, tmp_path):
    cfg = compose(*BASE, "schedule.n_tasks=2", "logger.mode=disabled")
    meta_train(cfg, tmp_path, progress=False)
    state_file = checkpoint.latest(tmp_path) / "state.json"
    state = json.loads(state_file.read_text())
    state["minutes"] = 5.0  # as if the run had trained for 5 minutes already
    state_file.write_text(json.dumps(state))
    manifest = json.loads((state_file.parent / checkpoint.MANIFEST).read_text())
    del manifest["state.json"]  # the edit would fail the checksum
    (state_file.parent / checkpoint.MANIFEST).write_text(json.dumps(manifest))
    cfg.schedule.n_tasks, cfg.schedule.max_minutes = 10, 4.0
    summary = meta_train(cfg, tmp_path, progress=False, resume=True)
    assert summary["tasks_done"] == 3  # one more task, then the budget (already spent) stops it
    assert min(r["time_minutes"] for r in read_metrics(tmp_path)[-3:] if "time_minutes" in r) > 5.0


def test_resume_raises_a_time_budget_that_stopped_the_run(tmp_path):
    code, out = finish(start(tmp_path, "schedule.max_minutes=0.0001"))
    assert code == 0, out[-3000:]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["task_00000"]  # the budget ended it
    bad = subprocess.run([sys.executable, "-m", "mlsh.resume", str(tmp_path), "--max-minutes", "0"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "schedule.max_minutes must be a number > 0" in bad.stderr
    spent = subprocess.run([sys.executable, "-m", "mlsh.resume", str(tmp_path)], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)  # the same budget: said, not one more task
    assert spent.returncode != 0 and "more than its schedule.max_minutes=0.0001: nothing to resume (--max-minutes" \
        in spent.stderr, spent.stderr[-3000:]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["task_00000"]
    proc = subprocess.run([sys.executable, "-m", "mlsh.resume", str(tmp_path), "--max-minutes", "30", "--n-tasks",
                           "3"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tasks_done=3" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir())[-1] == "task_00002"


def test_resume_of_a_run_that_reached_its_target_return_says_so(tmp_path):
    code, out = finish(start(tmp_path, "schedule.target_return=-1000", "schedule.target_window=1"))
    assert code == 0, out[-3000:]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["task_00000"]  # the target ended it
    proc = subprocess.run([sys.executable, "-m", "mlsh.resume", str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert "reached its schedule.target_return=-1000 (mean task/warmup_return of the last 1 tasks" in proc.stderr
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["task_00000"]


def test_resume_refuses_a_run_folder_of_another_config(compose, tmp_path):
    meta_train(compose(*BASE, "schedule.n_tasks=1", "logger.mode=disabled"), tmp_path, progress=False)
    other = compose(*BASE, "schedule.n_tasks=2", "logger.mode=disabled", "algo.subpolicy.ppo.learning_rate=0.1")
    with pytest.raises(ValueError, match=r"another config \(algo.subpolicy.ppo.learning_rate: 0.0003 -> 0.1\)"):
        meta_train(other, tmp_path, progress=False, resume=True)


@pytest.mark.parametrize(("override", "message"), [
    ("checkpoint.keep_last=-2", "checkpoint.keep_last must be an integer >= 1, got -2"),
    ("checkpoint.keep_last=abc", "checkpoint.keep_last must be an integer >= 1, got 'abc'"),
    ("algo.subpolicy.ppo.learning_rate=-0.1", r"algo.subpolicy.ppo.learning_rate must be a number in \(0, 1\]"),
    ("algo.master.ppo.learning_rate=1e6", r"algo.master.ppo.learning_rate must be a number in \(0, 1\]"),
    ("algo.master.ppo.batch_size=0", "algo.master.ppo.batch_size must be an integer >= 1"),
    ("+env.kwargs.bogus=1", r"env.kwargs: \['bogus'\] not arguments of MovementBanditsEnv"),
])
def test_bad_values_get_named_errors_before_any_work(compose, override, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose(override))


def test_init_from_an_env_of_other_spaces_or_another_k_is_a_named_error(compose, tmp_path):
    meta_train(compose(*BASE, "schedule.n_tasks=1", "logger.mode=disabled"), tmp_path, progress=False)
    with pytest.raises(ConfigError, match=r"was trained on env 'movement_bandits' with spaces .*env=four_rooms has"):
        validate(compose("env=four_rooms", f"init_from={tmp_path}"))
    with pytest.raises(ConfigError, match="has 2 sub-policies, this run asks for n_subpolicies=3"):
        validate(compose("n_subpolicies=3", f"init_from={tmp_path}"))
    validate(compose("+env.kwargs.step_size=10.0", f"init_from={tmp_path}"))  # another env of the same spaces is fine


def test_a_config_error_leaves_no_run_folder_and_a_bad_sweep_job_fails_alone(tmp_path):
    proc = subprocess.run([sys.executable, "run.py", "checkpoint.keep_last=-2", f"hydra.run.dir={tmp_path / 'r'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "config error: checkpoint.keep_last must be" in proc.stderr
    assert not (tmp_path / "r").exists()
    proc = subprocess.run([sys.executable, "run.py", "-m", "schedule=smoke", "logger.mode=disabled",
                           "progress_bar=false", "algo.subpolicy.ppo.learning_rate=0.001,-1,0.002",
                           f"hydra.sweep.dir={tmp_path / 's'}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    # the others run, and the sweep's exit code says that one failed
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "job 1 (algo.subpolicy.ppo.learning_rate=-1,schedule=smoke): config error" in proc.stderr
    assert "JobFailed: job 1 (algo.subpolicy.ppo.learning_rate=-1" in proc.stderr.splitlines()[-3]
    done = sorted(p.name for p in (tmp_path / "s").iterdir() if (p / "metrics.jsonl").exists())
    assert done == ["0_algo.subpolicy.ppo.learning_rate=0.001,schedule=smoke",
                    "2_algo.subpolicy.ppo.learning_rate=0.002,schedule=smoke"]
    assert not any(p.name.startswith("1_") for p in (tmp_path / "s").iterdir())


def test_a_submitit_job_that_times_out_is_requeued_and_continues_its_run_folder_exactly(tmp_path):
    """hydra/launcher=submitit_local with a 1-minute limit: submitit sends SIGUSR2 30 s before it (not settable
    for the local executor); the run checkpoints, submitit requeues the job, which resumes its own run folder; the
    result equals a run that was never stopped. The run must outlast those 30 s with a margin: 140 tasks took 50 s
    alone in an earlier session but 33 s (start-up included) in a later one, where the signal came after the run
    had ended; 250 tasks took 53 s there."""
    overrides = ("schedule=smoke", "schedule.joint_iters=2", "schedule.n_tasks=250", "logger.mode=offline",
                 "progress_bar=false")
    plain = subprocess.run([sys.executable, "run.py", *overrides, f"hydra.run.dir={tmp_path / 'plain'}"], cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
    assert plain.returncode == 0, plain.stderr[-3000:]
    proc = subprocess.run([sys.executable, "run.py", "-m", "hydra/launcher=submitit_local",
                           "hydra.launcher.timeout_min=1", "+hydra.launcher.max_num_timeout=20", *overrides,
                           f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (job,) = [p for p in (tmp_path / "sweep").iterdir() if p.name.startswith("0_")]
    log = "".join(p.read_text() for p in (tmp_path / "sweep" / ".submitit").glob("*/*_log.err"))
    assert "handing over to SignalHandler.checkpoint_and_try_requeue" in log
    assert "holds a run: resuming it" in log
    assert len(list((job / "wandb").glob("offline-run-*"))) >= 2  # one W&B run continued by each requeued job
    assert_same_run(tmp_path / "plain", job)
    assert [r["global_step"] for r in wandb_history(job)] == [r["global_step"] for r in read_metrics(job)]


@pytest.mark.parametrize("text, why", [("env: [unclosed\n  x: {", "while parsing a flow sequence"),
                                       ("seed: 0\n", "it holds no env and algo"),
                                       ("[1, 2]\n", "it holds no env and algo")])
def test_a_broken_run_config_is_named(tmp_path, text, why):
    from mlsh.evaluate import load_run_config

    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text(text)
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / '.hydra' / 'config.yaml'} is not a readable run "
                                                   f"config ({why}")):
        load_run_config(tmp_path)


def test_a_command_of_another_config_in_a_run_folder_leaves_the_runs_config_as_it_was(tmp_path):
    """Hydra rewrites .hydra at every start in a folder; when the run refuses the new config (another K, or a
    value that fails validation), the run's own config is put back, so it can still be resumed and evaluated."""
    code, out = finish(start(tmp_path, "schedule.n_tasks=2"))
    assert code == 0, out[-3000:]
    config = (tmp_path / ".hydra" / "config.yaml").read_bytes()
    for bad, said in (("n_subpolicies=3", "holds a run of another config (n_subpolicies: 2 -> 3)"),
                      ("schedule.warmup_iters=-1", "config error: schedule.warmup_iters"),
                      ("schedule.max_minutes=abc", "config error: schedule.max_minutes must be a number")):
        code, out = finish(start(tmp_path, "schedule.n_tasks=2", bad))
        assert code != 0 and said in out, out[-3000:]
        assert (tmp_path / ".hydra" / "config.yaml").read_bytes() == config
    finished = subprocess.run([sys.executable, "-m", "mlsh.resume", str(tmp_path)], cwd=ROOT, capture_output=True,
                              text=True, timeout=300)  # a finished run: said, not a silent success
    assert finished.returncode != 0
    assert "has done 2 tasks, its schedule.n_tasks is 2: nothing to resume" in finished.stderr
    resume_more = subprocess.run([sys.executable, "-m", "mlsh.resume", str(tmp_path), "--n-tasks", "3"], cwd=ROOT,
                                 capture_output=True, text=True, timeout=300)
    assert resume_more.returncode == 0 and "tasks_done=3" in resume_more.stdout, resume_more.stderr[-3000:]


def test_a_transfer_run_resumes_and_evaluates_after_its_source_is_moved(compose, tmp_path):
    """init_from is read when a run begins; later the run's own checkpoints hold everything it needs."""
    meta_train(compose(*BASE, "schedule.n_tasks=1", "logger.mode=disabled"), tmp_path / "source", progress=False)
    code, out = finish(start(tmp_path / "transfer", "schedule.n_tasks=1", f"init_from={tmp_path / 'source'}"))
    assert code == 0, out[-3000:]
    (tmp_path / "source").rename(tmp_path / "moved")
    proc = subprocess.run([sys.executable, "-m", "mlsh.resume", str(tmp_path / "transfer"), "--n-tasks", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "tasks_done=2" in proc.stdout, proc.stderr[-3000:]
    proc = subprocess.run([sys.executable, "-m", "mlsh.evaluate", str(tmp_path / "transfer"), "--tasks", "1",
                           "--updates", "0"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "transfer" / "eval.json").read_text())["run_dir"] == str(tmp_path / "transfer")
    # a new run still needs its source
    code, out = finish(start(tmp_path / "again", "schedule.n_tasks=1", f"init_from={tmp_path / 'source'}"))
    assert code != 0 and f"config error: init_from: no run folder or checkpoint at {tmp_path / 'source'}" in out


@pytest.mark.parametrize("override, message", [
    ("algo.subpolicy.net_arch=[32,32]", "has algo.subpolicy.net_arch=[64, 64], this run asks for [32, 32]"),
    ("algo=shared", "is of algo=mlsh, whose networks algo=shared cannot start from"),
    ("env.normalize_obs=true", "has no observation filter (its run had env.normalize_obs=false)"),
])
def test_an_init_from_that_cannot_fit_is_refused_before_any_work(compose, tmp_path, override, message):
    meta_train(compose(*BASE, "schedule.n_tasks=1", "logger.mode=disabled"), tmp_path / "source", progress=False)
    validate(compose(*BASE, f"init_from={tmp_path / 'source'}", "algo.master.net_arch=[32]"))  # masters start fresh
    with pytest.raises(ConfigError, match=re.escape(f"init_from: {tmp_path / 'source'}") + ".*" + re.escape(message)):
        validate(compose(*BASE, f"init_from={tmp_path / 'source'}", override))
