"""Every entry point, with tiny budgets, in seconds."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO

from mlsh import checkpoint
from mlsh.learners import MLSHLearner, make_task_env
from tests.conftest import ROOT


def run(*args, timeout=300):
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**__import__("os").environ, "WANDB_MODE": "offline"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "mlsh"
    run("run.py", "schedule=smoke", "logger.mode=offline", "progress_bar=false", f"hydra.run.dir={run_dir}")
    return run_dir


def test_run_folder_holds_config_provenance_metrics_checkpoints_and_wandb(smoke_run):
    assert (smoke_run / ".hydra" / "config.yaml").exists() and (smoke_run / ".hydra" / "overrides.yaml").exists()
    prov = json.loads((smoke_run / "provenance.json").read_text())
    assert "run.py" in prov["command"] and "schedule=smoke" in prov["command"]
    assert len(prov["git"]["commit"]) == 40
    assert prov["packages"]["torch"].startswith("2.13.0") and prov["packages"]["stable-baselines3"] == "2.9.2"
    rows = [json.loads(line) for line in (smoke_run / "metrics.jsonl").read_text().splitlines()]
    iters = [r for r in rows if "episode_return" in r]
    assert len(iters) == 4  # 2 tasks x (1 warmup + 1 joint)
    assert [r["global_step"] for r in iters] == [200, 400, 600, 800]
    assert [r["phase_joint"] for r in iters] == [0, 1, 0, 1]
    assert "sub0/value_loss" in iters[1] and "sub0/value_loss" not in iters[0]
    assert all(abs(r["master/share_sub0"] + r["master/share_sub1"] - 1) < 1e-9 for r in iters)
    assert len([r for r in rows if "task/final_return" in r]) == 2
    assert [p.name for p in checkpoint.list_checkpoints(smoke_run)] == ["task_00000", "task_00001"]
    assert list((smoke_run / "wandb").glob("offline-run-*/run-*.wandb"))


def test_checkpointed_subpolicies_open_with_ppo_load(smoke_run):
    sub = PPO.load(smoke_run / "checkpoints" / "task_00001" / "sub1.zip", device="cpu")
    action, _ = sub.predict(np.full(6, 0.5, dtype=np.float32))
    assert 0 <= int(action) < 5
    assert checkpoint.read_state(smoke_run / "checkpoints" / "task_00001")["global_step"] == 800


def test_evaluate_and_plot(smoke_run, tmp_path):
    proc = run("-m", "mlsh.evaluate", str(smoke_run), "--tasks", "2", "--updates", "2")
    assert "mean return after 0..2 updates" in proc.stdout
    result = json.loads((smoke_run / "eval.json").read_text())
    assert result["algo"] == "mlsh" and result["updates"] == [0, 1, 2] and len(result["per_task"]) == 2
    assert len(result["mean_return"]) == 3 and all(np.isfinite(result["mean_return"]))
    assert (smoke_run / "eval.png").read_bytes()[:4] == b"\x89PNG"
    # a changed held-out setting, written beside the default evaluation, which stays as it was
    proc = run("-m", "mlsh.evaluate", str(smoke_run), "--tasks", "2", "--updates", "2", "--name", "eval_lr",
               "algo.master.ppo.learning_rate=0.05")
    assert f"wrote {smoke_run / 'eval_lr.json'}" in proc.stdout
    assert json.loads((smoke_run / "eval_lr.json").read_text())["overrides"] == ["algo.master.ppo.learning_rate=0.05"]
    assert json.loads((smoke_run / "eval.json").read_text()) == result
    bad = subprocess.run([sys.executable, "-m", "mlsh.evaluate", str(smoke_run), "algo.master.ppo.lr=1"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "give --name NAME: eval.json keeps" in bad.stderr
    bad = subprocess.run([sys.executable, "-m", "mlsh.evaluate", str(smoke_run), "algo.master.ppo.lr=1", "--name",
                          "x"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "the run's config has no algo.master.ppo.lr" in bad.stderr
    assert json.loads((smoke_run / "eval.json").read_text()) == result
    # a second evaluation under the same name stops before it starts, naming the file; --overwrite replaces it
    again = subprocess.run([sys.executable, "-m", "mlsh.evaluate", str(smoke_run), "--tasks", "1"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and f"{smoke_run / 'eval.json'} exists (2 tasks, 2 updates, overrides: none); " \
        "give --name NEW to keep both, or --overwrite to replace it" in again.stderr
    assert json.loads((smoke_run / "eval.json").read_text()) == result
    run("-m", "mlsh.evaluate", str(smoke_run), "--tasks", "1", "--updates", "1", "--overwrite")
    assert json.loads((smoke_run / "eval.json").read_text())["updates"] == [0, 1]
    out = tmp_path / "cmp.png"
    run("-m", "mlsh.plot", str(smoke_run), str(smoke_run), "--out", str(out))
    assert out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("algo,files", [("shared", ["policy.zip"]), ("scratch", ["policy.zip"])])
def test_baselines_run_with_the_same_budget_and_logging(tmp_path, algo, files):
    run_dir = tmp_path / algo
    run("run.py", f"algo={algo}", "schedule=smoke", "logger.mode=disabled", "progress_bar=false",
        f"hydra.run.dir={run_dir}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    iters = [r for r in rows if "episode_return" in r]
    assert [r["global_step"] for r in iters] == [200, 400, 600, 800]
    assert "policy/value_loss" in iters[0]
    assert sorted(p.name for p in checkpoint.latest(run_dir).iterdir()) == \
        sorted([*files, "state.json", "resume.pkl", "manifest.json"])
    run("-m", "mlsh.evaluate", str(run_dir), "--tasks", "1", "--updates", "1")
    assert json.loads((run_dir / "eval.json").read_text())["algo"] == algo


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_multirun_writes_one_folder_per_value_grouped_in_wandb(tmp_path, launcher):
    sweep = tmp_path / "sweep"
    run("run.py", "-m", "n_subpolicies=1,3", "schedule=smoke", "logger.mode=offline", "progress_bar=false",
        f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep}")
    dirs = sorted(p for p in sweep.iterdir() if p.is_dir() and (p / "metrics.jsonl").exists())
    assert [d.name for d in dirs] == ["0_n_subpolicies=1,schedule=smoke", "1_n_subpolicies=3,schedule=smoke"]
    shares = [k for k in json.loads((dirs[1] / "metrics.jsonl").read_text().splitlines()[0]) if "share" in k]
    assert shares == ["master/share_sub0", "master/share_sub1", "master/share_sub2"]
    for d in dirs:
        run_file = next((d / "wandb").glob("offline-run-*/run-*.wandb"))
        assert sweep.name.encode() in run_file.read_bytes()  # the W&B group is the sweep's name


def test_checkpoint_round_trip(compose, tmp_path):
    cfg = compose("schedule=smoke", "logger.mode=disabled")
    a = MLSHLearner(cfg, make_task_env(cfg, seed=0))
    a.start_task(0)
    a.iterate(joint=True)
    checkpoint.write(checkpoint.task_dir(tmp_path, 0), a.save, {"global_step": 200})
    th.manual_seed(123)
    b = MLSHLearner(cfg, make_task_env(cfg, seed=1))
    b.load(checkpoint.latest(tmp_path))
    for sa, sb in zip(a.subs, b.subs, strict=True):
        for (ka, va), (kb, vb) in zip(sa.policy.state_dict().items(), sb.policy.state_dict().items(), strict=True):
            assert ka == kb and th.equal(va, vb)


def test_missing_or_corrupt_checkpoints_fail_clearly(smoke_run, tmp_path):
    from mlsh.evaluate import evaluate_run

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="is not a run folder"):
        evaluate_run(empty)
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(smoke_run, broken)
    shutil.rmtree(broken / "checkpoints")
    with pytest.raises(FileNotFoundError, match="no checkpoint under"):
        evaluate_run(broken)
    (broken / "checkpoints" / "task_00000").mkdir(parents=True)
    (broken / "checkpoints" / "task_00000" / "state.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        evaluate_run(broken)
    (broken / "checkpoints" / "task_00000" / "state.json").write_text("{}")
    with pytest.raises(ValueError, match="has 0 sub-policies"):
        evaluate_run(broken)


def test_resume_continues_from_the_last_checkpoint_without_duplicate_metrics(compose, tmp_path):
    import shutil

    from mlsh.runlog import read_metrics
    from mlsh.train import meta_train

    cfg = compose("schedule=smoke", "schedule.n_tasks=3", "logger.mode=disabled")
    meta_train(cfg, tmp_path, progress=False)
    shutil.rmtree(checkpoint.task_dir(tmp_path, 2))  # as if killed during the last task, after logging some of it
    cfg.schedule.n_tasks = 4
    summary = meta_train(cfg, tmp_path, progress=False, resume=True)
    rows = read_metrics(tmp_path)
    iters = [r["global_step"] for r in rows if "episode_return" in r]
    assert iters == [200 * i for i in range(1, 9)]
    minutes = [r["time_minutes"] for r in rows if "time_minutes" in r]
    assert minutes == sorted(minutes)  # the time axis continues, it does not restart at 0
    assert [r["task/index"] for r in rows if "task/final_return" in r] == [0, 1, 2, 3]
    assert summary["global_step"] == 1600
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)][-1] == "task_00003"


def test_resume_without_a_checkpoint_starts_the_run_over(compose, tmp_path):
    from mlsh.runlog import read_metrics
    from mlsh.train import meta_train

    cfg = compose("schedule=smoke", "logger.mode=disabled")
    meta_train(cfg, tmp_path / "plain", progress=False)
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "metrics.jsonl").write_text('{"global_step": 200}\n')  # killed before its first checkpoint
    with pytest.warns(UserWarning, match="has no checkpoint yet: starting the run over"):
        meta_train(cfg, tmp_path / "cut", progress=False, resume=True)
    timing = ("steps_per_second", "time_minutes")
    assert [{k: v for k, v in r.items() if k not in timing} for r in read_metrics(tmp_path / "cut")] == \
        [{k: v for k, v in r.items() if k not in timing} for r in read_metrics(tmp_path / "plain")]


def test_init_from_loads_subpolicies_of_another_run_and_checks_the_fit(compose, smoke_run, tmp_path):
    from mlsh.config import ConfigError, validate
    from mlsh.train import meta_train

    cfg = compose("schedule=smoke", "logger.mode=disabled", "schedule.joint_iters=0", "schedule.n_tasks=1",
                  f"init_from={smoke_run}")
    meta_train(cfg, tmp_path / "transfer", progress=False)
    for k in range(2):  # frozen (no joint iterations): the saved sub-policies equal the ones loaded
        a = PPO.load(smoke_run / "checkpoints" / "task_00001" / f"sub{k}.zip", device="cpu").policy.state_dict()
        b = PPO.load(tmp_path / "transfer" / "checkpoints" / "task_00000" / f"sub{k}.zip",
                     device="cpu").policy.state_dict()
        assert all(th.equal(a[name], b[name]) for name in a)
    with pytest.raises(ConfigError, match="init_from: no run folder or checkpoint at"):
        validate(compose("schedule=smoke", f"init_from={tmp_path / 'nope'}"))
    with pytest.raises(ValueError, match="has 2 sub-policies.*n_subpolicies=3"):
        meta_train(compose("schedule=smoke", "logger.mode=disabled", "n_subpolicies=3", f"init_from={smoke_run}"),
                   tmp_path / "k3", progress=False)


def test_observation_filter_is_saved_with_checkpoints_and_restored(compose, tmp_path):
    from mlsh.evaluate import transfer
    from mlsh.learners import normalizer
    from mlsh.train import meta_train

    cfg = compose("schedule=smoke", "logger.mode=disabled", "env.normalize_obs=true")
    meta_train(cfg, tmp_path, progress=False)
    ckpt = checkpoint.latest(tmp_path)
    assert (ckpt / "obs_normalizer.pkl").exists()
    learner = MLSHLearner(cfg, make_task_env(cfg, seed=5))
    norm = normalizer(learner.env)
    assert norm.obs_rms.count < 1  # fresh filter
    learner.load(ckpt)
    # 800 primitive steps + 2 envs x 2 task resets, plus the 1e-4 SB3 starts the count at
    assert norm.obs_rms.count == pytest.approx(804.0001)
    assert transfer(cfg, ckpt, n_tasks=1, n_updates=1, seed=0)["n_tasks"] == 1
    plain = compose("schedule=smoke", "logger.mode=disabled")
    meta_train(plain, tmp_path / "plain", progress=False)
    with pytest.raises(FileNotFoundError, match="has no obs_normalizer.pkl"):
        learner.load(checkpoint.latest(tmp_path / "plain"))


def test_gallery_writes_stills_and_a_random_gif_and_a_run_s_maps_and_video(smoke_run, tmp_path):
    from PIL import Image

    run("-m", "mlsh.gallery", "--only", "Bandits", "--out", str(tmp_path), "--video-out", str(tmp_path),
        "--steps", "12")
    assert (tmp_path / "MovementBandits-v0.png").read_bytes()[:4] == b"\x89PNG"
    assert Image.open(tmp_path / "MovementBandits-v0.gif").n_frames == 12
    (smoke_run / "video.gif").unlink()
    proc = run("-m", "mlsh.gallery", "--run", str(smoke_run), "--steps", "12")
    assert Image.open(smoke_run / "video.gif").n_frames == 12  # the run's hierarchy, on demand
    assert (smoke_run / "maps" / "subpolicies_latest.png").read_bytes()[:4] == b"\x89PNG"
    assert "video.gif" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (("mlsh.benchmarks.subpolicy_paths", "{missing}"), "error: no run folder or checkpoint at"),
    (("mlsh.benchmarks.subpolicy_paths", "{run}"), "error: root paths need a MuJoCo env (ant or humanoid)"),
    (("mlsh.benchmarks.subpolicy_paths", "{run}", "--episodes", "0"), "--episodes and --max-steps must be >= 1"),
    (("mlsh.benchmarks.four_rooms_primitives", "--run", "{run}"), "is a run of env=movement_bandits: --run scores"),
    (("mlsh.benchmarks.scaling", "--load", "{missing}"), "--load {missing}: not a readable --save file"),
    (("mlsh.benchmarks.scaling", "--envs", "nope"), "--envs: no conf/env file for ['nope']"),
    (("mlsh.benchmarks.kill_resume", "--out", "{file}"), "is a file, not a folder"),
    (("mlsh.benchmarks.kill_resume", "--out", "{tmp}/kr", "n_subpolicies=0"),
     "config error: n_subpolicies must be an integer >= 1, got 0"),
    (("mlsh.gallery", "--size", "0"), "--size must be at least 32 pixels, got 0"),
    (("mlsh.gallery", "--video-env", "nope"), "--video-env must be one of ['mlsh/MovementBandits-v0'"),
    (("mlsh.gallery", "--only", "nope"), "--only 'nope' matches none of"),
    (("mlsh.gallery", "--run", "{run}", "--steps", "0"), "--steps must be >= 1, got 0"),
    (("mlsh.evaluate", "{run}", "--seed", "-3"), "--seed must be in [0, 2**32 - 1], got -3"),
    (("mlsh.plot", "{run}", "--window", "-5"), "--window must be >= 1 iteration, got -5"),
])
def test_the_tools_name_bad_input_in_one_line(smoke_run, tmp_path, args, message):
    """A wrong path, a run of another env or a bad flag: an error that says what is wrong, no traceback."""
    (tmp_path / "file.txt").write_text("not a folder")
    fill = {"missing": str(tmp_path / "missing"), "run": str(smoke_run), "file": str(tmp_path / "file.txt"),
            "tmp": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", *(a.format(**fill) for a in args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0 and message.format(**fill) in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


def test_transfer_benchmark_runs_end_to_end_and_prints_the_table(tmp_path):
    proc = run("-m", "mlsh.benchmarks.transfer", "--env", "four_rooms", "--seed", "0", "--out", str(tmp_path),
               "--minutes", "0.01", "--tasks", "1", "--updates", "1", "schedule.rollout_steps=400",
               "schedule.n_envs=4", "schedule.warmup_iters=1", "schedule.joint_iters=1")
    summary = json.loads((tmp_path / "seed0" / "summary.json").read_text())
    assert set(summary["final"]) == {"mlsh", "shared", "scratch"}
    assert summary["oracle"] > 10  # FourRooms has an oracle that walks to the goal
    assert summary["training"]["shared"]["steps"] == summary["training"]["mlsh"]["steps"]  # same budget
    assert "four_rooms transfer" in proc.stdout and (tmp_path / "seed0" / "transfer.png").exists()


def test_transfer_benchmark_adds_a_baseline_to_a_seed_done_before(tmp_path):
    bench = ("-m", "mlsh.benchmarks.transfer", "--env", "four_rooms", "--seed", "0", "--out", str(tmp_path))
    small = ("--tasks", "1", "--updates", "1")
    missing = subprocess.run([sys.executable, *bench, *small, "--add", "--baselines", "scratch"], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0 and "seed0/summary.json does not exist" in missing.stderr
    run(*bench, *small, "--minutes", "0.01", "--baselines", "", "schedule.rollout_steps=400", "schedule.n_envs=4",
        "schedule.warmup_iters=1", "schedule.joint_iters=1")
    before = json.loads((tmp_path / "seed0" / "summary.json").read_text())
    metrics = (tmp_path / "seed0" / "mlsh" / "metrics.jsonl").read_bytes()
    assert set(before["final"]) == {"mlsh"}
    other = subprocess.run([sys.executable, *bench, "--tasks", "2", "--updates", "1", "--add", "--baselines",
                            "scratch"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert other.returncode != 0 and "not --tasks 2 --updates 1" in other.stderr
    run(*bench, *small, "--add", "--baselines", "scratch")
    after = json.loads((tmp_path / "seed0" / "summary.json").read_text())
    assert set(after["final"]) == {"mlsh", "scratch"}
    assert after["curves"]["mlsh"] == before["curves"]["mlsh"] and after["training"] == before["training"]
    assert (tmp_path / "seed0" / "mlsh" / "metrics.jsonl").read_bytes() == metrics  # not trained again


def test_transfer_report_with_a_baseline_on_some_seeds_only(tmp_path, capsys):
    """Part way through ``--add`` over the seeds: the table prints '-' where a seed lacks an algorithm, and the
    figure's mean of that algorithm is over the seeds that have it."""
    from mlsh.benchmarks import transfer

    def summary(seed, curves):
        return {"env": "four_rooms", "seed": seed, "oracle": 50.0, "n_tasks": 2, "n_updates": 1, "curves": curves,
                "final": {k: v[-1] for k, v in curves.items()},
                "training": {"mlsh": {"tasks": 3, "steps": 1000, "minutes": 1.0}}}

    rows = [summary(0, {"mlsh": [10.0, 40.0], "option_critic": [5.0, 30.0]}), summary(1, {"mlsh": [20.0, 45.0]})]
    for r in rows:
        (tmp_path / f"seed{r['seed']}").mkdir()
        (tmp_path / f"seed{r['seed']}" / "summary.json").write_text(json.dumps(r))
    transfer.report(tmp_path)
    out = capsys.readouterr().out.splitlines()
    table = {line.split()[0]: line.split() for line in out if line.split() and line.split()[0] in ("0", "1")}
    assert table["0"][1:3] == ["40.0", "30.0"] and table["0"][4:6] == ["0.80", "0.60"]
    assert table["1"][1:3] == ["45.0", "-"] and table["1"][4:6] == ["0.90", "-"]
    assert sum("option_critic curve" in line for line in out) == 1
    assert "seed 0 meta-training: mlsh 0.00 M steps, 3 tasks, 1.0 min" in out
    assert (tmp_path / "transfer_seeds.png").read_bytes()[:4] == b"\x89PNG"
    # the figure's primitive-step axis: steps per update from the summary, or from MLSH's evaluation beside it
    assert transfer.rollout_steps({"rollout_steps": 3200}) == 3200
    assert transfer.rollout_steps({"_dir": tmp_path / "seed0"}) is None
    (tmp_path / "seed0" / "mlsh").mkdir()
    (tmp_path / "seed0" / "mlsh" / "eval.json").write_text(json.dumps({"rollout_steps": 400}))
    assert transfer.rollout_steps({"_dir": tmp_path / "seed0"}) == 400
    # an evaluation with changed held-out settings (mlsh.evaluate --name), on seed 1 only
    (tmp_path / "seed1" / "option_critic").mkdir()
    (tmp_path / "seed1" / "option_critic" / "eval_t50.json").write_text(
        json.dumps({"mean_return": [7.0, 35.0], "overrides": ["algo.target_every=50"]}))
    transfer.report(tmp_path, ["option_critic/eval_t50"])
    out = capsys.readouterr().out.splitlines()
    assert "option_critic[algo.target_every=50]" in out[1].split()
    table = {line.split()[0]: line.split() for line in out if line.split() and line.split()[0] in ("0", "1")}
    assert table["0"][3] == "-" and table["1"][3] == "35.0" and table["1"][7] == "0.70"
    assert "seed 1 option_critic[algo.target_every=50] curve (0..1 updates): 7.0 35.0" in out
    with pytest.raises(SystemExit, match="give ALGO/NAME"):
        transfer.report(tmp_path, ["eval_t50"])


def test_subpolicy_paths_of_an_ant_run(tmp_path):
    run_dir = tmp_path / "ant"
    run("run.py", "env=ant_two_walk", "schedule=smoke", "schedule.rollout_steps=400", "logger.mode=disabled",
        "progress_bar=false", f"hydra.run.dir={run_dir}")
    proc = run("-m", "mlsh.benchmarks.subpolicy_paths", str(run_dir), "--episodes", "1", "--max-steps", "20")
    assert proc.stdout.count("sub-policy ") == 2 and "heading" in proc.stdout
    assert (run_dir / "subpolicy_paths.png").read_bytes()[:4] == b"\x89PNG"


def test_groups_speed_benchmark_compares_one_and_several_groups():
    proc = run("-m", "mlsh.benchmarks.groups_speed", "--groups", "2", "--tasks", "1", "--repeats", "1",
               "schedule=smoke")
    lines = proc.stdout.splitlines()
    one = next(line for line in lines if line.startswith("1 group x 4 envs, 1 tasks"))
    many = next(line for line in lines if line.startswith("2 groups x 2 envs, 2 tasks"))
    assert one.split()[-1] == "1.00" and float(many.split()[-1]) > 0


def test_four_rooms_primitives_bound():
    proc = run("-m", "mlsh.benchmarks.four_rooms_primitives")
    lines = proc.stdout.splitlines()
    four = next(line for line in lines if line.startswith("original four"))[28:].split()
    every = next(line for line in lines if line.startswith("every free cell"))[28:].split()
    oracle4, goal_cells4 = float(four[0]), float(four[1])
    oracle104, greedy104 = float(every[0]), float(every[2])
    assert goal_cells4 == pytest.approx(oracle4, abs=0.5)  # one go-to primitive per goal serves the four goals
    assert greedy104 < 0.2 * oracle104  # no four goal-blind primitives serve every cell


def test_four_rooms_primitives_scores_stochastic_subpolicies_exactly():
    from mlsh.benchmarks.four_rooms_primitives import (
        go_to_policies,
        macro_model,
        macro_model_stochastic,
        transition_matrices,
    )

    P = transition_matrices()
    go_to_68 = go_to_policies(P)[:, 68]
    one_hot = np.eye(P.shape[0])[go_to_68]  # the deterministic primitive as action probabilities
    for a, b in zip(macro_model(P, go_to_68, 25), macro_model_stochastic(P, one_hot, 25), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-12)
    uniform = np.full((P.shape[1], P.shape[0]), 1.0 / P.shape[0])
    M, R = macro_model_stochastic(P, uniform, 1)
    np.testing.assert_allclose(M, P.mean(axis=0), atol=1e-12)  # one step of a uniform policy
    np.testing.assert_allclose(R, P.mean(axis=0), atol=1e-12)  # expected steps on each goal cell after one step
    assert np.allclose(M.sum(axis=1), 1.0)


def test_four_rooms_primitives_scores_a_runs_subpolicies(tmp_path):
    run("run.py", "env=four_rooms", "schedule=smoke", "logger.mode=disabled", "progress_bar=false",
        f"hydra.run.dir={tmp_path}")
    lines = run("-m", "mlsh.benchmarks.four_rooms_primitives", "--run", str(tmp_path)).stdout.splitlines()
    rows = {line[:16].strip(): line[16:].split() for line in lines[2:]}
    assert set(rows) == {"sub-policy 0", "sub-policy 1", "sub-policy 2", "sub-policy 3", "best master", "oracle"}
    best, oracle = np.array(rows["best master"][:4], float), np.array(rows["oracle"][:4], float)
    alone = np.array([rows[f"sub-policy {k}"] for k in range(4)], float)
    assert np.all(best >= alone.max(axis=0) - 0.11) and np.all(best <= oracle + 0.11)  # (printed to 0.1)


def test_held_out_rollouts_hold_whole_episodes_even_with_many_envs_per_group(compose):
    from mlsh.evaluate import transfer, whole_episode_envs

    # 5 envs x 40 steps: no env would finish a 50-step episode in a rollout, and curve points would have no return
    cfg = compose("algo=scratch", "schedule=smoke", "logger.mode=disabled", "schedule.n_envs=5")
    assert whole_episode_envs(cfg) == 4  # 200 / 4 = 50 steps per env, a multiple of the 10-step macro duration
    assert whole_episode_envs(compose("schedule=smoke", "schedule.n_envs=2")) == 2  # 100 steps each already fit
    result = transfer(cfg, None, n_tasks=1, n_updates=2, seed=0)
    assert result["n_envs"] == 4
    assert len(result["mean_return"]) == 3 and np.isfinite(result["mean_return"]).all()
