"""Seed studies in mlsh.plot: grouping by config apart from the seed, bootstrap bands, rliable's intervals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from mlsh import plot


def fake_run(root, compose, name: str, held_out: list[float], returns: list[float], *overrides: str):
    """A run folder with the composed config, a metrics.jsonl of ``returns`` and an eval.json whose held-out
    tasks all end at the values ``held_out``."""
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(compose("schedule=smoke", *overrides)))
    (d / "metrics.jsonl").write_text("".join(json.dumps({"global_step": 100 * (i + 1), "episode_return": r}) + "\n"
                                             for i, r in enumerate(returns)))
    curves = [[0.0, v] for v in held_out]
    (d / "eval.json").write_text(json.dumps({"updates": [0, 1], "mean_return": [0.0, float(np.mean(held_out))],
                                             "std_return": [0.0, 0.0], "n_tasks": len(held_out),
                                             "per_task": curves}))
    return d


def test_runs_group_by_config_apart_from_the_seed(tmp_path, compose):
    for s in range(3):
        fake_run(tmp_path / "sweep", compose, f"mlsh{s}", [5.0] * 4, [1, 2, 3], f"seed={s}")
    for s in range(2):
        fake_run(tmp_path, compose, f"k3_{s}", [1.0] * 4, [1, 2, 3], f"seed={s}", "n_subpolicies=3")
    runs = plot.find_runs([tmp_path / "sweep", tmp_path / "k3_0", tmp_path / "k3_1"])
    groups = plot.group_runs(runs)
    assert {k: len(v) for k, v in groups.items()} == {"n_subpolicies=2": 3, "n_subpolicies=3": 2}
    with pytest.raises(FileNotFoundError, match="no run folder"):
        plot.find_runs([tmp_path / "missing"])


def test_bootstrap_band_of_known_curves():
    same = np.tile([1.0, 2.0, 3.0], (4, 1))
    mean, lo, hi = plot.bootstrap_band(same)
    assert np.allclose(mean, [1, 2, 3]) and np.allclose(lo, mean) and np.allclose(hi, mean)
    spread = np.array([[0.0], [10.0]])
    mean, lo, hi = plot.bootstrap_band(spread, reps=4000)
    # resampling two seeds: the mean is 0, 5 or 10 with probabilities 1/4, 1/2, 1/4
    assert mean[0] == 5.0 and lo[0] == 0.0 and hi[0] == 10.0
    ragged = np.array([[1.0, 1.0], [3.0, np.nan]])  # the second run ended earlier
    assert np.allclose(plot.bootstrap_band(ragged)[0], [2.0, 1.0])


def test_summary_table_interquartile_mean_interval_and_probability_of_improvement(tmp_path, compose):
    for s in range(3):
        fake_run(tmp_path, compose, f"a{s}", [10.0, 10.0, 10.0, 10.0], [1, 2], f"seed={s}", "algo=mlsh")
    for s in range(3):
        # held-out returns 0, 1, 2, 100: the interquartile mean drops the outlier and the zero
        fake_run(tmp_path, compose, f"b{s}", [0.0, 1.0, 2.0, 100.0], [1, 2], f"seed={s}", "algo=scratch")
    table = plot.summary_table(plot.group_runs(plot.find_runs([tmp_path])), reps=500)
    a, b = table["groups"]["algo.name=mlsh"], table["groups"]["algo.name=scratch"]
    assert a["iqm"] == 10.0 and a["iqm_ci"] == [10.0, 10.0] and a["seeds"] == 3 and a["tasks"] == 4
    assert b["iqm"] == pytest.approx(1.5) and b["mean"] == pytest.approx(25.75)
    p = table["probability_of_improvement"]
    # per task, a beats b on 3 of 4 held-out tasks and loses on one
    assert p["algo.name=mlsh > algo.name=scratch"]["p"] == pytest.approx(0.75)
    assert p["algo.name=scratch > algo.name=mlsh"]["p"] == pytest.approx(0.25)
    text = plot.format_table(table)
    assert "algo.name=mlsh" in text and "P(algo.name=mlsh > algo.name=scratch) = 0.75" in text


def test_plot_cli_draws_the_figure_and_writes_the_table(tmp_path, compose):
    from tests.test_smoke import run

    for s in range(2):
        fake_run(tmp_path / "sweep", compose, f"r{s}", [4.0, 6.0], [1, 2, 3, 4], f"seed={s}")
    out = tmp_path / "seeds.png"
    proc = run("-m", "mlsh.plot", str(tmp_path / "sweep"), "--out", str(out), "--window", "1")
    assert out.read_bytes()[:4] == b"\x89PNG" and "IQM" in proc.stdout
    table = json.loads(out.with_suffix(".json").read_text())
    assert list(table["groups"].values())[0]["per_seed_mean"] == [5.0, 5.0]


def test_task_history_orders_tasks_and_averages_them_per_span(tmp_path, compose):
    from tests.test_smoke import run

    d = fake_run(tmp_path, compose, "r0", [1.0], [1, 2, 3])
    # 8 tasks drawn in this order (logged as they finish, out of order): task "x" then "y" alternate, "y"'s
    # returns fall in the second half; the last "y" ended no episode in its last iteration (final null)
    tasks = [("x", 10, 20), ("y", 5, 15), ("x", 12, 22), ("y", 6, 16),
             ("x", 14, 24), ("y", -50, -40), ("x", 16, 26), ("y", -60, None)]
    rows = [{"global_step": 1000 + 10 * (7 - i), "task/index": i, "task/group": i % 2, "task/task": name,
             "task/warmup_return": w, "task/final_return": f} for i, (name, w, f) in enumerate(tasks)]
    # iteration rows of two groups: each task's master ends on sub-policy 0 for "x" and 1 for "y", except task 5
    # ("y"), whose last iteration picked 0 most; task 7's iterations logged no shares; an earlier row of task 0
    # (not its last) picked 1
    iters = [{"global_step": 900, "group0/task_index": 0, "group0/master/share_sub0": 0.2,
              "group0/master/share_sub1": 0.8, "group1/task_index": 1, "group1/master/share_sub0": 0.5,
              "group1/master/share_sub1": 0.5}]
    for i, (name, _, _) in enumerate(tasks[:7]):
        first = 0.9 if name == "x" or i == 5 else 0.05
        iters.append({"global_step": 950 + i, f"group{i % 2}/task_index": i, f"group{i % 2}/master/share_sub0": first,
                      f"group{i % 2}/master/share_sub1": round(1 - first, 2)})
    with (d / "metrics.jsonl").open("a") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in iters + rows))
    history = plot.task_history(d)
    assert [t["index"] for t in history] == list(range(8)) and np.isnan(history[7]["final"])
    assert history[0]["shares"] == [0.9, 0.1] and history[1]["shares"] == [0.05, 0.95]  # the last row counts
    assert history[5]["shares"] == [0.9, 0.1] and history[7]["shares"] is None
    assert plot.pick_table(history, parts=2) == {"x": [[2, 0], [2, 0]], "y": [[0, 2], [1, 0]]}
    assert plot.last_shares([{"task_index": 3, "master/share_sub0": 0.25, "master/share_sub1": 0.25,
                              "master/share_sub2": 0.5}]) == {3: [0.25, 0.25, 0.5]}  # one group: plain keys
    table = plot.task_table(history, parts=2)
    assert table["x"] == [(2, 11.0, 21.0), (2, 15.0, 25.0)]
    assert table["y"] == [(2, 5.5, 15.5), (2, -55.0, -40.0)]  # the NaN final is left out of the mean
    assert plot.clip_bottom([-2000.0, -1500.0] + list(np.linspace(-100, 50, 40))) > -150  # the first two cut off
    assert plot.clip_bottom(list(np.linspace(-100, 50, 40))) is None and plot.clip_bottom([-2000.0, 1.0]) is None
    out = tmp_path / "tasks.png"
    proc = run("-m", "mlsh.plot", "--tasks", str(d), "--out", str(out))
    assert out.read_bytes()[:4] == b"\x89PNG" and "span 4" in proc.stdout
    assert "picking sub-policy 0, 1, ... most" in proc.stdout
    empty = fake_run(tmp_path, compose, "r1", [1.0], [1, 2])
    with pytest.raises(ValueError, match="finished no task"):
        plot.plot_tasks([empty], tmp_path / "none.png")
