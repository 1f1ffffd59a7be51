"""Pictures of the task distributions: ``python -m mlsh.gallery [--out envs/gallery] [--run <run dir>]``.

Writes one rendered PNG per registered ``mlsh/*`` env (a sampled task, a few random steps in) and a short GIF of a
policy acting: with ``--run``, the run's last master and its sub-policies on the run's last task (the frame
caption names the active sub-policy); without, uniformly random actions on ``--video-env``.
"""

from __future__ import annotations

import argparse
import os
import pickle
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from envs import ENVS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def still(env_id: str, size: int, seed: int = 0, warmup_steps: int = 5) -> Image.Image:
    env = gym.make(env_id, render_mode="rgb_array")
    rng = np.random.default_rng(seed)
    env.reset(seed=seed, options={"task": env.unwrapped.sample_task(rng)})
    env.action_space.seed(seed)
    for _ in range(warmup_steps):
        env.step(env.action_space.sample())
    frame = env.render()
    env.close()
    return Image.fromarray(frame).resize((size, size), Image.LANCZOS)


def _caption(frame: np.ndarray, text: str, size: int) -> Image.Image:
    image = Image.fromarray(frame).resize((size, size), Image.LANCZOS)
    ImageDraw.Draw(image).text((6, 6), text, fill=(0, 0, 0))
    return image


def _obs_filter(ckpt: Path):
    """The run's observation filter (``env.normalize_obs``) as a function, identity if it had none."""
    from mlsh.learners import OBS_STATS

    path = ckpt / OBS_STATS
    if not path.exists():
        return lambda obs: obs
    with open(path, "rb") as f:
        norm = pickle.load(f)
    norm.training = False
    return norm.normalize_obs


def policy_video(out: Path, size: int, steps: int, run_dir: Path | None, env_id: str) -> Path:
    """A GIF of one episode (at most ``steps`` steps)."""
    frames = []
    if run_dir is None:
        env = gym.make(env_id, render_mode="rgb_array")
        env.reset(seed=0, options={"task": env.unwrapped.sample_task(np.random.default_rng(0))})
        env.action_space.seed(0)
        for t in range(steps):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            frames.append(_caption(env.render(), f"random policy, step {t}", size))
            if terminated or truncated:
                break
        name = env_id.split("/")[-1]
    else:
        from stable_baselines3 import PPO

        from mlsh import checkpoint
        from mlsh.evaluate import load_run_config
        from mlsh.master import MasterPolicy  # noqa: F401  (unpickled by PPO.load)

        cfg = load_run_config(run_dir)
        ckpt = checkpoint.latest(run_dir)
        state = checkpoint.read_state(ckpt)
        subs = [PPO.load(ckpt / f"sub{k}.zip", device="cpu") for k in range(cfg.n_subpolicies)]
        # the first group's master and task (older checkpoints of one group: master.zip and "task")
        master = PPO.load(ckpt / ("master_g0.zip" if (ckpt / "master_g0.zip").exists() else "master.zip"),
                          device="cpu")
        task = checkpoint.group_task(state)
        env = gym.make(cfg.env.id, render_mode="rgb_array", **cfg.env.get("kwargs", {}))
        normalize = _obs_filter(ckpt)
        obs, _ = env.reset(seed=0, options={"task": task})
        k = 0
        for t in range(steps):
            if t % cfg.macro_duration == 0:
                k = int(master.predict(normalize(obs), deterministic=False)[0])
            action, _ = subs[k].predict(normalize(obs), deterministic=False)
            obs, _, terminated, truncated, _ = env.step(action)
            frames.append(_caption(env.render(), f"task {task}  sub-policy {k}  step {t}", size))
            if terminated or truncated:
                break
        name = cfg.env.id.split("/")[-1] + "_mlsh"
    env.close()
    path = out / f"{name}.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=60, loop=0)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlsh.gallery", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "envs" / "gallery", help="folder for the stills")
    parser.add_argument("--video-out", type=Path, default=ROOT / "outputs" / "gallery", help="folder for the GIF")
    parser.add_argument("--size", type=int, default=240, help="picture width and height in pixels")
    parser.add_argument("--run", type=Path, default=None, help="a run folder whose policy the GIF shows")
    parser.add_argument("--video-env", default="mlsh/MovementBandits-v0", help="env of the GIF without --run")
    parser.add_argument("--steps", type=int, default=200, help="at most this many steps in the GIF")
    parser.add_argument("--only", default="", help="only envs whose id contains this")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    args.video_out.mkdir(parents=True, exist_ok=True)
    for env_id in ENVS:
        if args.only in env_id:
            path = args.out / f"{env_id.split('/')[-1]}.png"
            still(env_id, args.size).save(path, optimize=True)
            print(f"wrote {path}")
    print(f"wrote {policy_video(args.video_out, args.size, args.steps, args.run, args.video_env)}")


if __name__ == "__main__":
    main()
