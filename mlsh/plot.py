"""Comparison figures and seed studies: ``python -m mlsh.plot <run dir or sweep dir> ... [--out comparison.png]``.

Runs are grouped by their config apart from the seed (a Hydra multirun over seeds is one group; runs of another
algorithm or K are others), each group labelled by the values that tell it from the others. Left: each group's
training curve (mean episode return per iteration, smoothed, against primitive env steps); right: its held-out
transfer curve (``eval.json`` from ``python -m mlsh.evaluate``); a line is the mean over the group's seeds and the
band its 95% bootstrap confidence interval (resampling seeds). The table (printed, and ``<out>.json``) gives per
group the interquartile mean of the held-out return after the last update over every seed and held-out task with
its 95% stratified-bootstrap interval (rliable), and for every two groups the probability that one improves on
the other.

``--tasks`` (``[--out tasks.png]``) draws instead each run's task history: every finished task's return at the end
of its warmup and at its end, in the order the tasks were drawn, coloured by task, and below it the sub-policy
the task's master picked most at its end; it prints per task its means in four spans of the run and how many of
its tasks ended on each sub-policy. It shows what training on some tasks does to the others (the sub-policies are
shared) and which sub-policy serves which task.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np

from mlsh.runlog import read_metrics

REPS = 2000  # bootstrap resamples
COMMITTED = 0.8  # a master that gives one sub-policy at least this share of its picks has settled on it


def _label(run_dir: Path) -> str:
    provenance = run_dir / "provenance.json"
    algo = ""
    if (run_dir / "eval.json").exists():
        algo = json.loads((run_dir / "eval.json").read_text()).get("algo", "")
    elif provenance.exists():
        argv = json.loads(provenance.read_text()).get("argv", [])
        algo = next((a.split("=", 1)[1] for a in argv if a.startswith("algo=")), "")
    return f"{algo} {run_dir.name}".strip()


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(values) < window:
        return values
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


def find_runs(paths: list[Path]) -> list[Path]:
    """Run folders among ``paths``: each path itself if it holds ``metrics.jsonl``, else the run folders below it
    (a sweep folder)."""
    runs = []
    for path in paths:
        path = Path(path)
        if (path / "metrics.jsonl").exists():
            runs.append(path)
            continue
        found = sorted(p.parent for p in path.glob("**/metrics.jsonl") if (p.parent / ".hydra").exists())
        if not found:
            raise FileNotFoundError(f"{path} is no run folder and holds none (no metrics.jsonl)")
        runs.extend(found)
    return runs


def group_runs(run_dirs: list[Path]) -> dict[str, list[Path]]:
    """The runs grouped by their config apart from the seed, as {label: run folders}; the label names the config
    values in which the groups differ (``algo.name=mlsh n_subpolicies=3``), else the algorithm and env."""
    from mlsh.evaluate import load_run_config
    from mlsh.train import run_config

    configs, keys = {}, {}
    for d in run_dirs:
        flat = {k: v for k, v in run_config(load_run_config(d)).items() if k != "seed"}
        key = json.dumps(flat, sort_keys=True, default=str)
        configs[key] = flat
        keys.setdefault(key, []).append(Path(d))
    differ = sorted(k for k in set().union(*configs.values())
                    if len({json.dumps(c.get(k), default=str) for c in configs.values()}) > 1)
    if "algo.name" in differ:  # the algorithm's own settings follow from its name
        differ = ["algo.name"] + [k for k in differ if not k.startswith("algo.")]
    first = ("algo.name", "env.name", "n_subpolicies", "macro_duration")
    shown = sorted(differ, key=lambda k: (first.index(k) if k in first else len(first), k))[:4]
    groups = {}
    for key, dirs in keys.items():
        c = configs[key]
        label = " ".join(f"{k}={c.get(k)}" for k in shown) if shown else f"{c.get('algo.name')} {c.get('env.name')}"
        groups[label] = dirs
    return groups


def bootstrap_band(curves: np.ndarray, ci: float = 0.95, reps: int = REPS, seed: int = 0,
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over runs (rows) of ``curves`` and the ``ci`` percentile bootstrap interval of that mean, resampling
    runs with replacement; NaN entries (a run that ended earlier) are left out of each resample's mean."""
    curves = np.atleast_2d(np.asarray(curves, dtype=float))
    rng = np.random.default_rng(seed)
    picks = rng.integers(len(curves), size=(reps, len(curves)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a grid point that no resampled run covers: NaN
        means = np.nanmean(curves[picks], axis=1)  # (reps, T)
        lo, hi = np.nanpercentile(means, [50 * (1 - ci), 50 * (1 + ci)], axis=0)
        return np.nanmean(curves, axis=0), lo, hi


def _training_curves(dirs: list[Path], window: int, points: int = 200) -> tuple[np.ndarray, np.ndarray] | None:
    """The runs' smoothed training returns on one grid of global steps (NaN past a run's end)."""
    series = []
    for d in dirs:
        rows = [r for r in read_metrics(d) if r.get("episode_return") is not None]
        if rows:
            steps = np.array([r["global_step"] for r in rows], dtype=float)
            y = smooth(np.array([r["episode_return"] for r in rows], dtype=float), window)
            series.append((steps[len(steps) - len(y):], y))
    if not series:
        return None
    grid = np.linspace(min(s[0][0] for s in series), max(s[0][-1] for s in series), points)
    return grid, np.stack([np.interp(grid, x, y, left=np.nan, right=np.nan) for x, y in series])


def _evals(dirs: list[Path]) -> list[dict]:
    return [json.loads((d / "eval.json").read_text()) for d in dirs if (d / "eval.json").exists()]


def summary_table(groups: dict[str, list[Path]], reps: int = REPS, seed: int = 0) -> dict:
    """Per group with held-out results: seeds, mean, interquartile mean of the return after the last update over
    every seed x held-out task and its 95% interval (rliable, stratified bootstrap over seeds); and for every
    ordered pair of such groups with as many held-out tasks, P(group a improves on group b) with its interval."""
    from rliable import library as rly
    from rliable import metrics

    warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)
    scores = {}
    for label, dirs in groups.items():
        evals = _evals(dirs)
        if evals:
            lengths = {len(e["per_task"]) for e in evals}
            if len(lengths) > 1:
                raise ValueError(f"group {label!r}: eval.json files with different numbers of held-out tasks "
                                 f"{sorted(lengths)}: evaluate every seed with the same --tasks")
            scores[label] = np.array([[curve[-1] for curve in e["per_task"]] for e in evals], dtype=float)
    rows = {}
    for label, sc in scores.items():
        point, interval = rly.get_interval_estimates(
            {label: sc}, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps,
            random_state=np.random.RandomState(seed))
        rows[label] = {"seeds": len(sc), "tasks": sc.shape[1], "mean": float(sc.mean()),
                       "per_seed_mean": sc.mean(axis=1).round(3).tolist(), "iqm": float(point[label][0]),
                       "iqm_ci": [float(interval[label][0, 0]), float(interval[label][1, 0])]}
    improve = {}
    for a in scores:
        for b in scores:
            if a != b and scores[a].shape[1] == scores[b].shape[1]:
                name = f"{a} > {b}"
                point, interval = rly.get_interval_estimates(
                    {name: (scores[a], scores[b])}, metrics.probability_of_improvement, reps=reps,
                    random_state=np.random.RandomState(seed))
                improve[name] = {"p": float(point[name]),
                                 "ci": [float(interval[name][0].item()), float(interval[name][1].item())]}
    return {"groups": rows, "probability_of_improvement": improve}


def format_table(table: dict) -> str:
    lines = [f"{'group':<40} {'seeds':>5} {'tasks':>5} {'mean':>7} {'IQM':>7}  95% CI          per-seed mean"]
    for label, r in table["groups"].items():
        lo, hi = r["iqm_ci"]
        lines.append(f"{label[:40]:<40} {r['seeds']:>5} {r['tasks']:>5} {r['mean']:>7.2f} {r['iqm']:>7.2f}  "
                     f"[{lo:6.2f}, {hi:6.2f}]  " + " ".join(f"{v:.1f}" for v in r["per_seed_mean"]))
    for name, r in table["probability_of_improvement"].items():
        lines.append(f"P({name}) = {r['p']:.2f} [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}]")
    return "\n".join(lines)


def plot_runs(run_dirs: list[Path], out: Path, window: int = 20) -> Path:
    """The figure of the module docstring for ``run_dirs`` (run or sweep folders), written to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = group_runs(find_runs(run_dirs))
    with_eval = {label: _evals(dirs) for label, dirs in groups.items() if _evals(dirs)}
    fig, axes = plt.subplots(1, 2 if with_eval else 1, figsize=(12 if with_eval else 6, 4.2), squeeze=False)
    ax = axes[0, 0]
    for i, (label, dirs) in enumerate(groups.items()):
        curves = _training_curves(dirs, window)
        if curves is None:
            continue
        grid, ys = curves
        mean, lo, hi = bootstrap_band(ys)
        ax.plot(grid, mean, color=f"C{i}", label=f"{label} ({len(dirs)} seed{'s' if len(dirs) > 1 else ''})")
        if len(dirs) > 1:
            ax.fill_between(grid, lo, hi, color=f"C{i}", alpha=0.2)
    ax.set_xlabel("primitive env steps")
    ax.set_ylabel(f"mean episode return (moving average of {window} iterations)")
    ax.set_title("meta-training: mean over seeds, 95% bootstrap CI")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if with_eval:
        ax = axes[0, 1]
        for label, evals in with_eval.items():
            n = min(len(e["mean_return"]) for e in evals)
            x = np.asarray(evals[0]["updates"][:n])
            mean, lo, hi = bootstrap_band(np.stack([e["mean_return"][:n] for e in evals]))
            ax.plot(x, mean, marker="o", ms=3, color=f"C{list(groups).index(label)}",
                    label=f"{label} ({len(evals)} seed{'s' if len(evals) > 1 else ''})")
            if len(evals) > 1:
                ax.fill_between(x, lo, hi, color=f"C{list(groups).index(label)}", alpha=0.2)
        ax.set_xlabel("master updates (policy updates for the baselines)")
        ax.set_ylabel("mean episode return on held-out tasks")
        ax.set_title("transfer: mean over seeds, 95% bootstrap CI")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def task_history(run_dir: Path) -> list[dict]:
    """Every finished task of a run in the order they were drawn: ``index``, ``group``, ``task``, ``warmup``
    (the mean return of its last warmup iteration, None if it had none), ``final`` (of its last iteration, NaN
    where that iteration ended no episode) and ``shares`` (its master's share of each sub-policy's macro steps in
    its last iteration, None where the run logged none)."""
    rows = read_metrics(run_dir)
    shares = last_shares(rows)
    out = [{"index": r["task/index"], "group": r["task/group"], "task": r["task/task"],
            "warmup": r.get("task/warmup_return"),
            "final": float("nan") if r.get("task/final_return") is None else r["task/final_return"],
            "shares": shares.get(r["task/index"])} for r in rows if "task/index" in r]
    return sorted(out, key=lambda t: t["index"])


def last_shares(rows: list[dict]) -> dict[int, list[float]]:
    """Per task number, the master's share of each sub-policy in the task's last iteration, from the iteration
    rows: ``task_index`` and ``master/share_sub<k>`` with one group, the same under ``group<g>/`` with several."""
    out: dict[int, list[float]] = {}
    for r in rows:
        for key, index in r.items():
            if index is None or not (key == "task_index" or (key.startswith("group") and key.endswith("/task_index"))):
                continue
            prefix, k, shares = key[:-len("task_index")], 0, []
            while (share := r.get(f"{prefix}master/share_sub{k}")) is not None:
                shares.append(float(share))
                k += 1
            if shares:
                out[int(index)] = shares  # rows come in step order: the task's last iteration is its last row
    return out


def by_span(history: list[dict], parts: int = 4) -> dict[str, list[list[dict]]]:
    """Per task value (as text), the run's tasks of that value in each of ``parts`` consecutive spans of the run
    (by draw order)."""
    spans = np.array_split(np.arange(len(history)), parts) if history else []
    return {name: [[history[i] for i in span if str(history[i]["task"]) == name] for span in spans]
            for name in sorted({str(t["task"]) for t in history})}


def pick_table(history: list[dict], parts: int = 4) -> dict[str, list[list[int]]]:
    """Per task value (as text), in each of ``parts`` spans of the run's tasks (``by_span``): how many of its tasks
    ended with their master picking each sub-policy most (tasks without logged shares left out)."""
    n_subs = max((len(t["shares"]) for t in history if t["shares"]), default=0)
    return {name: [np.bincount([int(np.argmax(t["shares"])) for t in mine if t["shares"]],
                               minlength=n_subs).tolist() for mine in spans]
            for name, spans in by_span(history, parts).items()}


def task_table(history: list[dict], parts: int = 4) -> dict[str, list[tuple[int, float, float]]]:
    """Per task value (as text), in each of ``parts`` consecutive spans of the run's tasks (``by_span``):
    (how many, mean warmup return, mean final return), NaN where the span holds none of it. Where a run turns
    its sub-policies to recent tasks, another task's returns fall after a span without it."""
    table: dict[str, list[tuple[int, float, float]]] = {}
    for name, spans in by_span(history, parts).items():
        row = []
        for mine in spans:
            warm = [t["warmup"] for t in mine if t["warmup"] is not None]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a span without this task: NaN
                row.append((len(mine), float(np.mean(warm)) if warm else float("nan"),
                            float(np.nanmean([t["final"] for t in mine])) if mine else float("nan")))
        table[name] = row
    return table


def format_task_table(run_dir: Path, table: dict, parts: int = 4) -> str:
    lines = [f"{run_dir}: mean warmup / final return per task, in {parts} spans of the run's tasks (draw order)",
             f"{'task':>8} " + " ".join(f"{f'span {i + 1}: n, warmup, final':>32}" for i in range(parts))]
    for name, row in table.items():
        lines.append(f"{name[:8]:>8} " + " ".join(f"{n:>8} {w:>11.1f} {f:>11.1f}" for n, w, f in row))
    return "\n".join(lines)


def format_pick_table(table: dict, parts: int = 4) -> str:
    lines = [f"tasks whose master ended picking sub-policy 0, 1, ... most, in the same {parts} spans",
             f"{'task':>8} " + " ".join(f"{f'span {i + 1}':>32}" for i in range(parts))]
    for name, row in table.items():
        lines.append(f"{name[:8]:>8} " + " ".join(f"{' '.join(str(c) for c in counts):>32}" for counts in row))
    return "\n".join(lines)


def clip_bottom(values: list[float]) -> float | None:
    """A lower axis limit that leaves out the few returns far below the rest (a run's first tasks, whose returns
    would flatten every later one into a line), or None where nothing is that far below."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if len(v) < 20:
        return None
    low, high = np.percentile(v, [10, 100])
    margin = 0.15 * (high - low)
    return float(low - margin) if v.min() < low - 3 * margin else None


def plot_tasks(run_dirs: list[Path], out: Path) -> Path:
    """Two panels per run, against the order the tasks were drawn in, coloured by task: each finished task's warmup
    return (hollow) and final return (filled), so that what training on one task does to the others shows; below,
    the sub-policy its master picked most in its last iteration (filled where that was at least ``COMMITTED`` of
    its picks), so that which sub-policy serves which task, and when that changes, shows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = find_runs(run_dirs)
    fig, axes = plt.subplots(2 * len(runs), 1, figsize=(10, 5.0 * len(runs)), squeeze=False,
                             gridspec_kw={"height_ratios": [2, 1] * len(runs)})
    for r, run_dir in enumerate(runs):
        ax, picks = axes[2 * r, 0], axes[2 * r + 1, 0]
        history = task_history(run_dir)
        if not history:
            raise ValueError(f"{run_dir} has finished no task yet (no task/index in its metrics.jsonl)")
        names = sorted({str(t["task"]) for t in history})
        colour = {n: f"C{i}" if len(names) <= 10 else "C0" for i, n in enumerate(names)}
        for i, name in enumerate(names):
            mine = [t for t in history if str(t["task"]) == name]
            x = [t["index"] for t in mine]
            ax.scatter(x, [t["final"] for t in mine], color=colour[name], s=14,
                       label=f"task {name}" if len(names) <= 10 else None)
            warm = [(t["index"], t["warmup"]) for t in mine if t["warmup"] is not None]
            if warm:
                ax.scatter(*zip(*warm, strict=True), facecolors="none", edgecolors=colour[name], s=14)
            offset = 0.25 * (i - (len(names) - 1) / 2) / max(len(names) - 1, 1)  # tasks side by side in a row
            for committed in (True, False):
                chosen = [(t["index"], int(np.argmax(t["shares"])) + offset) for t in mine
                          if t["shares"] and (max(t["shares"]) >= COMMITTED) == committed]
                if chosen:
                    picks.scatter(*zip(*chosen, strict=True), s=14, edgecolors=colour[name],
                                  facecolors=colour[name] if committed else "none")
        title = (f"{run_dir.parent.name}/{run_dir.name}: each task's return at the end of warmup (hollow) and at "
                 "its end (filled)")
        bottom = clip_bottom([v for t in history for v in (t["warmup"], t["final"]) if v is not None])
        if bottom is not None:
            ax.set_ylim(bottom=bottom)
            title += f"; returns below {bottom:.0f} not shown"
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("mean episode return")
        n_subs = max((len(t["shares"]) for t in history if t["shares"]), default=0)
        picks.set_title(f"the sub-policy each task's master picked most in its last iteration (filled: at least "
                        f"{COMMITTED:.0%} of its picks)" if n_subs else "no master shares in this run's metrics",
                        fontsize=9)
        picks.set_yticks(range(n_subs))
        picks.set_ylim(-0.5, max(n_subs, 1) - 0.5)
        picks.set_ylabel("sub-policy")
        picks.set_xlabel("task, in the order drawn")
        for a in (ax, picks):
            a.set_xlim(-1, max(t["index"] for t in history) + 1)
            a.grid(alpha=0.3)
        if len(names) <= 10:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlsh.plot", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", type=Path, nargs="+", help="run folders, or sweep folders holding them")
    parser.add_argument("--out", type=Path, default=None, help="the figure (comparison.png; tasks.png with --tasks)")
    parser.add_argument("--window", type=int, default=20, help="moving-average window in iterations")
    parser.add_argument("--tasks", action="store_true",
                        help="instead: each run's task history (every task's warmup and final return, in the order "
                             "drawn, and the sub-policy its master picked most; the figure, and per task its means "
                             "and picks in four spans of the run)")
    args = parser.parse_args(argv)
    if args.window < 1:
        parser.error(f"--window must be >= 1 iteration, got {args.window}")
    if args.tasks:
        args.out = args.out or Path("tasks.png")
        try:
            out = plot_tasks(args.run_dirs, args.out)
            for run_dir in find_runs(args.run_dirs):
                history = task_history(run_dir)
                print(format_task_table(run_dir, task_table(history)))
                print(format_pick_table(pick_table(history)))
        except (FileNotFoundError, ValueError) as err:
            raise SystemExit(f"error: {err}") from None
        print(f"wrote {out}")
        return
    args.out = args.out or Path("comparison.png")
    try:
        out = plot_runs(args.run_dirs, args.out, args.window)
        table = summary_table(group_runs(find_runs(args.run_dirs)))
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    print(f"wrote {out}")
    if table["groups"]:
        print(format_table(table))
        path = args.out.with_suffix(".json")
        path.write_text(json.dumps(table, indent=2))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
