"""Comparison figures: ``python -m mlsh.plot <run dir> [<run dir> ...] [--out comparison.png]``.

Left: the training curve of each run (mean episode return per iteration, smoothed, against primitive env steps).
Right: the held-out transfer curve of each run that has an ``eval.json`` (``python -m mlsh.evaluate``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mlsh.runlog import read_metrics


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


def plot_runs(run_dirs: list[Path], out: Path, window: int = 20) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = [(d, json.loads((d / "eval.json").read_text())) for d in run_dirs if (d / "eval.json").exists()]
    fig, axes = plt.subplots(1, 2 if evals else 1, figsize=(12 if evals else 6, 4), squeeze=False)
    ax = axes[0, 0]
    for d in run_dirs:
        rows = [r for r in read_metrics(d) if r.get("episode_return") is not None]
        if not rows:
            continue
        steps = np.array([r["global_step"] for r in rows], dtype=float)
        ret = np.array([r["episode_return"] for r in rows], dtype=float)
        y = smooth(ret, window)
        ax.plot(steps[len(steps) - len(y):], y, label=_label(d))
    ax.set_xlabel("primitive env steps")
    ax.set_ylabel(f"mean episode return (moving average of {window} iterations)")
    ax.set_title("meta-training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if evals:
        ax = axes[0, 1]
        for d, res in evals:
            x, mean = np.asarray(res["updates"]), np.asarray(res["mean_return"])
            sem = np.asarray(res["std_return"]) / np.sqrt(res["n_tasks"])
            ax.plot(x, mean, marker="o", ms=3, label=_label(d))
            ax.fill_between(x, mean - sem, mean + sem, alpha=0.2)
        ax.set_xlabel("master updates (policy updates for the baselines)")
        ax.set_ylabel("mean episode return on held-out tasks")
        ax.set_title("transfer")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlsh.plot", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, default=Path("comparison.png"))
    parser.add_argument("--window", type=int, default=20, help="moving-average window in iterations")
    args = parser.parse_args(argv)
    try:
        out = plot_runs(args.run_dirs, args.out, args.window)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
