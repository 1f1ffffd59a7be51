"""Pictures of the task distributions: ``python -m mlsh.gallery [--out envs/gallery] [--run <run dir>]``.

Without ``--run``: one rendered PNG per registered ``mlsh/*`` env (a sampled task, a few random steps in) and a
short GIF of uniformly random actions on ``--video-env``. With ``--run <run dir>``: what training writes at its end,
again from the run's latest good checkpoint, into the run folder: the sub-policy maps (``maps/*_latest.png``) and
an episode of group 0's master over the sub-policies on its task (``video.gif``; the border's colour and the caption
name the active sub-policy).
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
from mlsh import media  # noqa: E402

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


def _obs_filter(ckpt: Path):  # used by mlsh.media.load_hierarchy
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
    """A GIF of one episode (at most ``steps`` steps): a run's hierarchy (``mlsh.media.episode_video``: the
    border and caption name the active sub-policy), or uniformly random actions on ``env_id``."""
    if run_dir is None:
        frames = []
        env = gym.make(env_id, render_mode="rgb_array")
        env.reset(seed=0, options={"task": env.unwrapped.sample_task(np.random.default_rng(0))})
        env.action_space.seed(0)
        for t in range(steps):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            frames.append(_caption(env.render(), f"random policy, step {t}", size))
            if terminated or truncated:
                break
        env.close()
        return media.write_gif(frames, out / f"{env_id.split('/')[-1]}.gif", fps=16)
    h, _ = media.load_hierarchy(run_dir)
    frames, _, _ = media.episode_video(h, size, steps, every=int(h.cfg.get("media", {}).get("video_every", 1)))
    return media.write_gif(frames, out / f"{h.cfg.env.id.split('/')[-1]}_mlsh.gif")


def run_media(run_dir: Path, size: int, steps: int | None) -> list[Path]:
    """What training writes into a run folder, drawn again from its latest good checkpoint: the maps
    (``maps/<kind>_latest.png``) and the episode video (``video.gif``)."""
    h, state = media.load_hierarchy(run_dir)
    title = (f"{h.cfg.env.name}, seed {h.cfg.seed}: step {int(state['global_step']):,}, "
             f"{state.get('tasks_done', '?')} tasks")
    paths = list(media.write_maps(h, Path(run_dir) / "maps", "latest", title).values())
    frames, _, _ = media.episode_video(h, size, steps, every=int(h.cfg.get("media", {}).get("video_every", 1)))
    return [*paths, media.write_gif(frames, Path(run_dir) / "video.gif")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlsh.gallery", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "envs" / "gallery",
                        help="folder for the stills (default: envs/gallery, the README's pictures)")
    parser.add_argument("--video-out", type=Path, default=ROOT / "outputs" / "gallery",
                        help="folder for the GIF (default: outputs/gallery)")
    parser.add_argument("--size", type=int, default=240, help="picture width and height in pixels")
    parser.add_argument("--run", type=Path, default=None,
                        help="a run folder: write its maps and its episode video into it (as training does), only")
    parser.add_argument("--video-env", default="mlsh/MovementBandits-v0",
                        help=f"env of the GIF without --run (default: mlsh/MovementBandits-v0; one of {list(ENVS)})")
    parser.add_argument("--steps", type=int, default=None, help="at most this many steps in the GIF (default: "
                        "an episode, 200 steps for random actions)")
    parser.add_argument("--only", default="", help="only envs whose id contains this")
    args = parser.parse_args(argv)
    if args.size < 32:
        parser.error(f"--size must be at least 32 pixels, got {args.size}")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    if args.run is None and args.video_env not in ENVS:
        parser.error(f"--video-env must be one of {list(ENVS)}, got {args.video_env!r}")
    if args.run is None and not any(args.only in env_id for env_id in ENVS):
        parser.error(f"--only {args.only!r} matches none of {list(ENVS)}")
    if args.run is not None:
        try:
            for path in run_media(args.run, args.size, args.steps):
                print(f"wrote {path}")
        except (FileNotFoundError, ValueError) as err:
            raise SystemExit(f"error: {err}") from None
        return
    args.out.mkdir(parents=True, exist_ok=True)
    args.video_out.mkdir(parents=True, exist_ok=True)
    for env_id in ENVS:
        if args.only in env_id:
            path = args.out / f"{env_id.split('/')[-1]}.png"
            still(env_id, args.size).save(path, optimize=True)
            print(f"wrote {path}")
    print(f"wrote {policy_video(args.video_out, args.size, args.steps or 200, None, args.video_env)}")


if __name__ == "__main__":
    main()
