"""Where does each sub-policy go? ``python -m mlsh.benchmarks.subpolicy_paths <run dir> [--episodes 5]``.

For a MuJoCo run (ant or humanoid), each sub-policy of the latest checkpoint acts alone (the master forced to it)
from the env's start for a whole episode; the root's (x, y) path is recorded (``data.qpos[:2]``). Prints each
sub-policy's mean final position and heading, and draws the paths, one colour per sub-policy, into
``<run dir>/subpolicy_paths.png``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from mlsh import checkpoint, media  # noqa: E402
from mlsh.benchmarks import cli_description


def paths(run_dir: Path, episodes: int, max_steps: int | None = None) -> dict[int, list[np.ndarray]]:
    h, state = media.load_hierarchy(run_dir)
    return media.torso_paths(h, episodes, max_steps, task=checkpoint.group_task(state) or 0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlsh.benchmarks.subpolicy_paths",
                                     description=cli_description(__doc__))
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--max-steps", type=int, default=None, help="cut episodes shorter than the env's limit")
    args = parser.parse_args(argv)
    if args.episodes < 1 or args.max_steps is not None and args.max_steps < 1:
        parser.error("--episodes and --max-steps must be >= 1")
    try:
        result = paths(args.run_dir, args.episodes, args.max_steps)
    except (FileNotFoundError, ValueError) as err:  # CheckpointError is a ValueError
        raise SystemExit(f"error: {err}") from None

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    for k, runs in result.items():
        ends = np.array([p[-1] - p[0] for p in runs])
        mean, heading = media.heading(runs)
        print(f"sub-policy {k}: mean displacement ({mean[0]:+.2f}, {mean[1]:+.2f}), "
              f"distance {np.linalg.norm(mean):.2f}, heading {heading:+.0f} deg, per-episode distance "
              + " ".join(f"{np.linalg.norm(e):.2f}" for e in ends))
        for i, p in enumerate(runs):
            ax.plot(p[:, 0], p[:, 1], color=f"C{k}", alpha=0.7, label=f"sub-policy {k}" if i == 0 else None)
    ax.plot([0], [0], "k+")
    ax.set_aspect("equal")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(f"root path per sub-policy ({args.run_dir.name})")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = args.run_dir / "subpolicy_paths.png"
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
