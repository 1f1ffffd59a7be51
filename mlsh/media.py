"""What each sub-policy does: maps at checkpoints and a video of an episode, for the run folder and W&B.

Maps (``maps_for``), one colour per sub-policy:

- MovementBandits: for one goal layout, each sub-policy's most likely move at every point of a grid, as arrows
  (the paper's Fig. 3), with the goals marked, and the path each takes alone from the start;
- FourRooms: each sub-policy's most likely action in every free cell; for each group's task, the master's most
  likely choice per cell;
- KeyDoor: as MovementBandits, once without the key and once holding it; the masters' choices per point;
- the ant and humanoid envs: each sub-policy's torso (root) path from the start over one macro step and over an
  episode, acting alone.

The video (``episode_video``) is one episode of a master over the sub-policies, a frame per primitive step with a
border in the active sub-policy's colour and its index written on it.

Drawing never changes what a run computes: the maps use the policies' most likely actions; the torso paths and
the video sample under a private seed and leave torch's, numpy's and Python's global random states as they were.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch as th  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

# matplotlib's tab10, as RGB bytes: sub-policy k is drawn in COLOURS[k % 10] in maps and videos alike
COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
MOVES_2D = np.array([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]], dtype=float)  # MovementBandits and KeyDoor actions


def colour(k: int) -> tuple[float, float, float]:
    """Sub-policy ``k``'s colour for matplotlib."""
    return tuple(c / 255 for c in COLOURS[k % len(COLOURS)])


@contextmanager
def private_rng(seed: int) -> Iterator[None]:
    """Seed torch, numpy and ``random`` for the block, then put their global states back as they were."""
    np_state, py_state = np.random.get_state(), random.getstate()
    with th.random.fork_rng(devices=[]):
        th.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def identity(obs: np.ndarray) -> np.ndarray:
    return obs


@dataclass
class Hierarchy:
    """What the pictures show: the sub-policies, the masters of the groups (with their tasks), the observation
    filter the policies expect, and the env they act in."""

    cfg: Any                      # the run config (env id and kwargs, macro_duration)
    subs: Sequence[Any]           # K SB3 models (``policy`` and ``predict``)
    masters: Sequence[tuple[Any, Any, str]] = ()  # (master model, its task, a label such as "group 3")
    normalize: Callable[[np.ndarray], np.ndarray] = identity

    def make_env(self, render_size: int | None = None) -> gym.Env:
        """One env of the run's task distribution; with ``render_size``, rendering frames (MuJoCo's of that size)."""
        kwargs = dict(self.cfg.env.get("kwargs", None) or {})
        if render_size is not None:
            kwargs["render_mode"] = "rgb_array"
            if str(self.cfg.env.name).startswith(("ant_", "humanoid_")):
                kwargs.update(width=render_size, height=render_size)
        return gym.make(self.cfg.env.id, **kwargs)


def action_probs(model: Any, obs: np.ndarray, normalize: Callable = identity) -> np.ndarray:
    """(rows, actions): a discrete SB3 policy's action probabilities for each row of ``obs``."""
    policy = model.policy
    with th.no_grad():
        tensor, _ = policy.obs_to_tensor(normalize(np.asarray(obs, dtype=np.float32)))
        return policy.get_distribution(tensor).distribution.probs.cpu().numpy()


def most_likely(model: Any, obs: np.ndarray, normalize: Callable = identity) -> np.ndarray:
    """The action of highest probability of a discrete SB3 policy for each row of ``obs`` (no sampling)."""
    return action_probs(model, obs, normalize).argmax(axis=-1)


# -- the 2D envs: MovementBandits, KeyDoor ------------------------------------------------------------------------
def grid_points(low: float, high: float, n: int) -> np.ndarray:
    """An n x n grid over [low, high]^2 as (n*n, 2) points, row by row from the bottom."""
    axis = np.linspace(low, high, n)
    return np.array([(x, y) for y in axis for x in axis])


def point_actions(models: Sequence[Any], env: Any, points: np.ndarray, normalize: Callable = identity,
                  **state: Any) -> np.ndarray:
    """(len(models), len(points)): each model's most likely action with the agent at each point of the current
    layout (``env.obs_at(point, **state)``)."""
    obs = np.stack([env.obs_at(p, **state) for p in points])
    return np.stack([most_likely(m, obs, normalize) for m in models])


def _arrows(ax, points: np.ndarray, actions: np.ndarray, length: float) -> None:
    """Each sub-policy's move at each point as an arrow in its colour ('stay' as a dot), the K arrows of a point
    side by side so that none hides another."""
    k_total = len(actions)
    offsets = (np.arange(k_total) - (k_total - 1) / 2) * length * 0.25
    for k, acts in enumerate(actions):
        d = MOVES_2D[acts] * length
        base = points + offsets[k] * np.where(d[:, :1] != 0, [[0, 1]], [[1, 0]])  # shift across the move
        moving = np.abs(d).sum(axis=1) > 0
        ax.quiver(base[moving, 0], base[moving, 1], d[moving, 0], d[moving, 1], color=colour(k), angles="xy",
                  scale_units="xy", scale=1, width=0.006, label=f"sub-policy {k}")
        ax.plot(base[~moving, 0], base[~moving, 1], "o", ms=3, color=colour(k))


def _disc(ax, centre, radius, **kw) -> None:
    import matplotlib.patches as mpatches

    ax.add_patch(mpatches.Circle(centre, radius, **kw))


def bandit_map(h: Hierarchy, title: str, n: int = 11) -> Any:
    """MovementBandits: arrows of every sub-policy on a grid over the goal arena, one goal layout (env seed 0)."""
    import matplotlib.pyplot as plt

    env = h.make_env()
    env.reset(seed=0)
    base = env.unwrapped
    points = grid_points(0.0, base.arena_size, n)
    actions = point_actions(h.subs, base, points, h.normalize)
    fig, ax = plt.subplots(figsize=(6, 6))
    for g, goal in enumerate(base.goals):
        _disc(ax, goal, base.goal_radius, color=(0.85, 0.85, 0.85), zorder=0)
        ax.annotate(f"goal {g}", goal, ha="center", va="center", fontsize=9, zorder=0)
    _arrows(ax, points, actions, base.arena_size / (n - 1) * 0.7)
    for k, path in enumerate(greedy_paths(h, env)):
        ax.plot(path[:, 0], path[:, 1], color=colour(k), lw=3, alpha=0.5, zorder=3,
                label=f"sub-policy {k} alone from the start")
    ax.plot(*base.start, "k*", ms=10, label="start")
    _finish_2d(ax, title, -0.1 * base.arena_size, 1.1 * base.arena_size)
    env.close()
    return fig


def greedy_paths(h: Hierarchy, env: gym.Env, seed: int = 0) -> list[np.ndarray]:
    """Each sub-policy alone for an episode from the start of env seed ``seed``'s layout, taking its most likely
    action: the agent's positions (MovementBandits)."""
    paths = []
    for sub in h.subs:
        obs, _ = env.reset(seed=seed)
        xy = [env.unwrapped.agent.copy()]
        while True:
            obs, _, terminated, truncated, _ = env.step(int(most_likely(sub, obs[None], h.normalize)[0]))
            xy.append(env.unwrapped.agent.copy())
            if terminated or truncated:
                break
        paths.append(np.asarray(xy))
    return paths


def key_door_maps(h: Hierarchy, title: str, n: int = 11) -> tuple[Any, Any | None]:
    """KeyDoor: sub-policy arrows without and with the key; each master's choice per point, both ways."""
    import matplotlib.pyplot as plt

    env = h.make_env()
    env.reset(seed=0)
    base = env.unwrapped
    points = grid_points(0.0, base.arena_size, n)
    lim = (-0.1 * base.arena_size, 1.1 * base.arena_size)

    def scenery(ax):
        for d, door in enumerate(base.doors):
            _disc(ax, door, base.door_radius, color=(0.85, 0.85, 0.85), zorder=0)
            ax.annotate(f"door {d}", door, ha="center", va="center", fontsize=9, zorder=0)
        _disc(ax, base.key, base.key_radius, color=(1.0, 0.85, 0.85), zorder=0)
        ax.annotate("key", base.key, ha="center", va="center", fontsize=9, zorder=0)
        ax.plot(*base.start, "k*", ms=10)

    fig, axes = plt.subplots(1, 2, figsize=(11, 5.5))
    for ax, has_key in zip(axes, (False, True), strict=True):
        scenery(ax)
        _arrows(ax, points, point_actions(h.subs, base, points, h.normalize, has_key=has_key),
                base.arena_size / (n - 1) * 0.7)
        _finish_2d(ax, f"{title}\n{'holding the key' if has_key else 'without the key'}", *lim)
    masters = None
    if h.masters:
        masters, axes = plt.subplots(len(h.masters), 2, figsize=(9, 4.5 * len(h.masters)), squeeze=False)
        for row, (master, task, label) in zip(axes, h.masters, strict=True):
            for ax, has_key in zip(row, (False, True), strict=True):
                scenery(ax)
                picks = point_actions([master], base, points, h.normalize, has_key=has_key)[0]
                ax.scatter(points[:, 0], points[:, 1], c=[colour(k) for k in picks], s=40, marker="s")
                _finish_2d(ax, f"{label}, task {task}: master's choice, "
                           f"{'holding the key' if has_key else 'without the key'}", *lim, legend=False)
        _legend_patches(masters, len(h.subs))
        masters.tight_layout(rect=(0, 0.05, 1, 1))
    env.close()
    return fig, masters


def _finish_2d(ax, title: str, low: float, high: float, legend: bool = True) -> None:
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.2)
    if legend:
        ax.legend(loc="upper right", fontsize=8)


def _legend_patches(fig, k_total: int) -> None:
    import matplotlib.patches as mpatches

    fig.legend(handles=[mpatches.Patch(color=colour(k), label=f"sub-policy {k}") for k in range(k_total)],
               loc="lower center", ncol=min(k_total, 6), fontsize=9)


# -- FourRooms ----------------------------------------------------------------------------------------------------
def cell_actions(models: Sequence[Any], env: Any, normalize: Callable = identity) -> np.ndarray:
    """(len(models), free cells): each model's most likely action in every free cell."""
    from envs.four_rooms import N_CELLS

    obs = np.stack([env.obs_at(c) for c in range(N_CELLS)])
    return np.stack([most_likely(m, obs, normalize) for m in models])


def four_rooms_maps(h: Hierarchy, title: str) -> tuple[Any, Any | None]:
    """FourRooms: one panel per sub-policy with its most likely action in every cell; one panel per group with
    the master's most likely sub-policy in every cell (its goal starred)."""
    import matplotlib.pyplot as plt

    from envs.four_rooms import CELLS, DIRECTIONS, WALLS

    env = h.make_env()
    base = env.unwrapped
    actions = cell_actions(h.subs, base, h.normalize)
    rows, cols = CELLS[:, 0], CELLS[:, 1]

    def walls(ax, title):
        ax.imshow(np.where(WALLS, 0.35, 1.0), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=9)

    k_total = len(h.subs)
    fig, axes = plt.subplots(1, k_total, figsize=(3.2 * k_total, 3.6), squeeze=False)
    for k, ax in enumerate(axes[0]):
        walls(ax, f"sub-policy {k}")
        d = DIRECTIONS[actions[k]] * 0.7  # (d_row, d_col)
        ax.quiver(cols - d[:, 1] / 2, rows - d[:, 0] / 2, d[:, 1], d[:, 0], color=colour(k), angles="xy",
                  scale_units="xy", scale=1, width=0.012)
        ax.set_xlim(-0.5, WALLS.shape[1] - 0.5)
        ax.set_ylim(WALLS.shape[0] - 0.5, -0.5)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    masters = None
    if h.masters:
        n = len(h.masters)
        masters, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.9), squeeze=False)
        for ax, (master, task, label) in zip(axes[0], h.masters, strict=True):
            picks = cell_actions([master], base, h.normalize)[0]
            walls(ax, f"{label}, goal {task}")
            ax.scatter(cols, rows, c=[colour(k) for k in picks], s=90, marker="s")
            gr, gc = CELLS[int(task)]
            ax.plot(gc, gr, "k*", ms=12)
        _legend_patches(masters, k_total)
        masters.suptitle(f"{title}: the masters' choice per cell", fontsize=10)
        masters.tight_layout(rect=(0, 0.08, 1, 1))
    env.close()
    return fig, masters


# -- the MuJoCo envs ------------------------------------------------------------------------------------------------
def torso_paths(h: Hierarchy, episodes: int = 2, max_steps: int | None = None, task: Any = None,
                seed: int = 0) -> dict[int, list[np.ndarray]]:
    """Each sub-policy acting alone from the env's start: the root's (x, y) after every step, per episode."""
    env = h.make_env()
    if not hasattr(env.unwrapped, "data"):
        env.close()
        raise ValueError(f"root paths need a MuJoCo env (ant or humanoid), whose body has a position; "
                         f"env={h.cfg.env.name} has none")
    out: dict[int, list[np.ndarray]] = {}
    with private_rng(seed):
        for k, sub in enumerate(h.subs):
            out[k] = []
            for ep in range(episodes):
                options = {} if task is None else {"task": task}
                obs, _ = env.reset(seed=seed + 1000 * k + ep, options=options)
                xy = [env.unwrapped.data.qpos[:2].copy()]
                for _ in range(max_steps or 10**9):
                    action, _ = sub.predict(h.normalize(obs), deterministic=False)
                    obs, _, terminated, truncated, _ = env.step(action)
                    xy.append(env.unwrapped.data.qpos[:2].copy())
                    if terminated or truncated:
                        break
                out[k].append(np.asarray(xy))
    env.close()
    return out


def heading(paths: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """The mean displacement from start to end of ``paths`` and its heading in degrees (+x is 0, +y is 90)."""
    mean = np.mean([p[-1] - p[0] for p in paths], axis=0)
    return mean, float(np.degrees(np.arctan2(mean[1], mean[0])))


def paths_map(h: Hierarchy, title: str, episodes: int = 2, task: Any = None) -> Any:
    """The ant and humanoid envs: each sub-policy's root path over one macro step and over an episode."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    full = torso_paths(h, episodes, task=task)
    for ax, cut, name in ((axes[0], int(h.cfg.macro_duration), "one macro step"), (axes[1], None, "an episode")):
        for k, runs in full.items():
            runs = [p[: cut + 1] if cut else p for p in runs]
            _, deg = heading(runs)
            for i, p in enumerate(runs):
                ax.plot(p[:, 0], p[:, 1], color=colour(k), alpha=0.8,
                        label=f"sub-policy {k} (heading {deg:+.0f} deg)" if i == 0 else None)
        ax.plot([0], [0], "k+", ms=12)
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_title(f"{title}\nroot path over {name} ({cut or 'all'} steps)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# -- one entry point -------------------------------------------------------------------------------------------------
def maps_for(h: Hierarchy, title: str) -> dict[str, Any]:
    """The figures for the env of ``h.cfg``: {"subpolicies": fig, "masters": fig (FourRooms, KeyDoor)}."""
    name = str(h.cfg.env.name)
    if name == "movement_bandits":
        return {"subpolicies": bandit_map(h, title)}
    if name == "four_rooms":
        subs, masters = four_rooms_maps(h, title)
    elif name == "key_door":
        subs, masters = key_door_maps(h, title)
    elif name.startswith(("ant_", "humanoid_")):
        task = h.masters[0][1] if h.masters else None
        return {"subpolicies": paths_map(h, title, task=task)}
    else:
        raise ValueError(f"no sub-policy map for env {name!r}")
    return {"subpolicies": subs, **({"masters": masters} if masters is not None else {})}


def write_maps(h: Hierarchy, folder: Path, tag: str, title: str) -> dict[str, Path]:
    """Draw the maps and save each as ``<folder>/<kind>_<tag>.png``; returns {kind: path}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for kind, fig in maps_for(h, title).items():
        out[kind] = folder / f"{kind}_{tag}.png"
        fig.savefig(out[kind], dpi=100)
        plt.close(fig)
    return out


# -- video ------------------------------------------------------------------------------------------------------------
def _frame(pixels: np.ndarray, k: int | None, text: str, size: int) -> Image.Image:
    image = Image.fromarray(np.asarray(pixels, dtype=np.uint8)).convert("RGB").resize((size, size), Image.LANCZOS)
    draw = ImageDraw.Draw(image)
    border = max(3, size // 40) if k is not None else 0
    if k is not None:
        for i in range(border):
            draw.rectangle((i, i, size - 1 - i, size - 1 - i), outline=COLOURS[k % len(COLOURS)])
    draw.rectangle((border, border, size - 1 - border, 14 + border), fill=(255, 255, 255))
    draw.text((border + 4, border + 2), text, fill=COLOURS[k % len(COLOURS)] if k is not None else (0, 0, 0))
    return image


def episode_video(h: Hierarchy, size: int = 200, max_steps: int | None = None, seed: int = 0, every: int = 1,
                  ) -> tuple[list[Image.Image], list[int], Any]:
    """One episode of the first master in ``h.masters`` over the sub-policies, from env seed ``seed``: a frame
    after every ``every``-th primitive step (the border in the active sub-policy's colour, its index written at
    the top), the active sub-policy of each frame, and the task."""
    if not h.masters:
        raise ValueError("a video of the hierarchy needs a master")
    master, task, label = h.masters[0]
    env = h.make_env(render_size=size)
    frames, active = [], []
    with private_rng(seed):
        obs, _ = env.reset(seed=seed, options={"task": task})
        k, t = 0, 0
        while max_steps is None or t < max_steps:
            if t % int(h.cfg.macro_duration) == 0:
                k = int(master.predict(h.normalize(obs), deterministic=False)[0])
            action, _ = h.subs[k].predict(h.normalize(obs), deterministic=False)
            obs, _, terminated, truncated, _ = env.step(action)
            t += 1
            if t % every == 0 or terminated or truncated:
                frames.append(_frame(env.render(), k, f"sub-policy {k}  step {t}  task {task}", size))
                active.append(k)
            if terminated or truncated:
                break
    env.close()
    return frames, active, task


def write_gif(frames: list[Image.Image], path: Path, fps: int = 20) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return path


# -- from a run folder --------------------------------------------------------------------------------------------
def load_hierarchy(run: Path) -> tuple[Hierarchy, dict[str, Any]]:
    """The sub-policies, the masters of every group with their tasks and the observation filter of a run folder's
    latest good checkpoint (or of a checkpoint folder); also the checkpoint's state."""
    from stable_baselines3 import PPO

    from mlsh import checkpoint
    from mlsh.evaluate import load_run_config
    from mlsh.gallery import _obs_filter
    from mlsh.master import MasterPolicy  # noqa: F401  (unpickled by PPO.load)

    run = Path(run)
    ckpt = checkpoint.resolve(run)
    run_dir = ckpt.parent.parent if (run / "state.json").exists() else run
    cfg = load_run_config(run_dir)
    if cfg.algo.name != "mlsh":
        raise ValueError(f"{run_dir} is a run of algo={cfg.algo.name}: only MLSH runs have sub-policies to show")
    state = checkpoint.read_state(ckpt)
    subs = [PPO.load(ckpt / f"sub{k}.zip", device="cpu") for k in range(cfg.n_subpolicies)]
    masters = []
    groups = state.get("groups") or [{"group": 0, "task": state.get("task")}]
    for g, clock in enumerate(groups):
        path = ckpt / f"master_g{g}.zip"
        if not path.exists() and g == 0 and (ckpt / "master.zip").exists():
            path = ckpt / "master.zip"  # checkpoints of one group from before task groups
        if path.exists():
            masters.append((PPO.load(path, device="cpu"), clock.get("task"), f"group {g}"))
    return Hierarchy(cfg, subs, masters, _obs_filter(ckpt)), state
