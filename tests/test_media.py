"""Sub-policy maps and the episode video (mlsh.media) on hand-built policies whose behaviour is known."""

from __future__ import annotations

import json
import random

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from omegaconf import OmegaConf
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv

import envs  # noqa: F401  (registers the envs)
from envs.four_rooms import DIRECTIONS, N_CELLS
from mlsh import media
from mlsh.config import ConfigError, validate
from mlsh.runlog import wandb_local_history


def fixed_policy(env_id: str, action: int, n_actions: int | None = None, **kwargs) -> PPO:
    """A PPO model on ``env_id`` whose most likely action is ``action`` everywhere (action net: zero weights and
    a bias of 10 on that action); ``n_actions`` gives it another action space (a master over K sub-policies)."""
    env = DummyVecEnv([lambda: gym.make(env_id, **kwargs)])
    if n_actions is not None:
        env.action_space = gym.spaces.Discrete(n_actions)
    model = PPO("MlpPolicy", env, n_steps=8, batch_size=8, device="cpu", seed=0)
    with th.no_grad():
        net = model.policy.action_net
        net.weight.zero_()
        net.bias.zero_()
        net.bias[action] = 10.0
    return model


def config(name: str, env_id: str, k: int = 2, n: int = 10):
    return OmegaConf.create({"env": {"name": name, "id": env_id, "kwargs": {}}, "macro_duration": n,
                             "n_subpolicies": k})


def quivers(fig):
    """(offsets, U, V) of every arrow set drawn on ``fig``."""
    from matplotlib.quiver import Quiver

    return [(q.get_offsets(), np.asarray(q.U), np.asarray(q.V)) for ax in fig.axes for q in ax.collections
            if isinstance(q, Quiver)]


def test_a_sub_policy_that_always_moves_plus_x_gives_plus_x_arrows_everywhere():
    plus_x, minus_y = fixed_policy("mlsh/MovementBandits-v0", 1), fixed_policy("mlsh/MovementBandits-v0", 4)
    h = media.Hierarchy(config("movement_bandits", "mlsh/MovementBandits-v0"), [plus_x, minus_y])
    env = h.make_env().unwrapped
    env.reset(seed=0)
    points = media.grid_points(0, 400, 5)
    assert points.shape == (25, 2)
    actions = media.point_actions(h.subs, env, points)
    assert actions.shape == (2, 25) and (actions[0] == 1).all() and (actions[1] == 4).all()
    paths = media.greedy_paths(h, h.make_env())
    assert len(paths) == 2 and paths[0].shape == (51, 2)  # 50 steps of 20 units: +x, then -y
    assert np.allclose(paths[0][-1] - paths[0][0], [1000, 0]) and np.allclose(paths[1][-1] - paths[1][0], [0, -1000])
    fig = media.bandit_map(h, "test", n=5)
    (_, u0, v0), (_, u1, v1) = quivers(fig)
    assert (u0 > 0).all() and (v0 == 0).all()  # +x
    assert (u1 == 0).all() and (v1 < 0).all()  # -y
    assert len(u0) == len(u1) == 25


def test_four_rooms_maps_show_each_sub_policy_action_and_each_master_choice():
    down, left = fixed_policy("mlsh/FourRooms-v0", 1), fixed_policy("mlsh/FourRooms-v0", 2)
    master = fixed_policy("mlsh/FourRooms-v0", 1, n_actions=2)  # always sub-policy 1
    h = media.Hierarchy(config("four_rooms", "mlsh/FourRooms-v0", n=25), [down, left], [(master, 68, "group 0")])
    actions = media.cell_actions(h.subs, h.make_env().unwrapped)
    assert actions.shape == (2, N_CELLS) and (actions[0] == 1).all() and (actions[1] == 2).all()
    assert (media.cell_actions([master], h.make_env().unwrapped) == 1).all()
    subs_fig, masters_fig = media.four_rooms_maps(h, "test")
    (_, u0, v0), (_, u1, v1) = quivers(subs_fig)
    # arrows are (d_col, d_row) on an image whose rows grow downwards: action 1 is row + 1, action 2 column - 1
    assert np.allclose(np.c_[v0, u0] / 0.7, DIRECTIONS[1]) and np.allclose(np.c_[v1, u1] / 0.7, DIRECTIONS[2])
    squares = masters_fig.axes[0].collections[0].get_facecolors()[:, :3]
    assert len(squares) == N_CELLS and np.allclose(squares, media.colour(1))
    assert "goal 68" in masters_fig.axes[0].get_title()


def test_key_door_maps_draw_both_key_states_and_the_masters():
    subs = [fixed_policy("mlsh/KeyDoor-v0", 3), fixed_policy("mlsh/KeyDoor-v0", 2)]
    master = fixed_policy("mlsh/KeyDoor-v0", 0, n_actions=2)
    h = media.Hierarchy(config("key_door", "mlsh/KeyDoor-v0"), subs, [(master, 1, "group 0")])
    out = media.maps_for(h, "test")
    assert set(out) == {"subpolicies", "masters"}
    arrows = quivers(out["subpolicies"])
    assert len(arrows) == 4  # two sub-policies, without and with the key
    assert all((v > 0).all() and (u == 0).all() for _, u, v in arrows[0::2])  # sub-policy 0: +y
    assert len(out["masters"].axes) == 2


def test_video_has_one_frame_per_step_and_the_active_sub_policy_per_frame(tmp_path):
    subs = [fixed_policy("mlsh/MovementBandits-v0", 1), fixed_policy("mlsh/MovementBandits-v0", 3)]
    master = fixed_policy("mlsh/MovementBandits-v0", 1, n_actions=2)
    master.policy.random_pick_prob = 0.0
    h = media.Hierarchy(config("movement_bandits", "mlsh/MovementBandits-v0"), subs, [(master, 0, "group 0")])
    th.manual_seed(123)
    before = (th.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    frames, active, task = media.episode_video(h, size=64)
    after = (th.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    assert th.equal(before[0], after[0]) and (before[1] == after[1]).all() and before[2] == after[2]
    assert len(frames) == len(active) == 50 and task == 0  # MovementBandits' 50-step episodes
    assert set(active) == {1}  # the master's most likely pick; a +y sub-policy
    assert frames[0].size == (64, 64) and frames[0].getpixel((0, 32)) == media.COLOURS[1]  # its colour as border
    from PIL import Image

    # PIL merges identical consecutive frames of a GIF; at 200 pixels the step counter makes each differ
    path = media.write_gif(media.episode_video(h, size=200)[0], tmp_path / "v.gif")
    assert Image.open(path).n_frames == 50
    every = media.episode_video(h, size=64, every=10)[0]
    assert len(every) == 5


def test_torso_paths_follow_each_sub_policy_and_leave_the_global_random_state():
    cfg = config("ant_two_walk", "mlsh/AntTwoWalk-v0", n=20)
    env = gym.make("mlsh/AntTwoWalk-v0")
    subs = [PPO("MlpPolicy", DummyVecEnv([lambda: env]), n_steps=8, batch_size=8, device="cpu", seed=k)
            for k in range(2)]
    th.manual_seed(5)
    state = th.get_rng_state()
    paths = media.torso_paths(media.Hierarchy(cfg, subs), episodes=2, max_steps=15)
    assert th.equal(state, th.get_rng_state())
    assert set(paths) == {0, 1} and all(p.shape == (16, 2) for runs in paths.values() for p in runs)
    again = media.torso_paths(media.Hierarchy(cfg, subs), episodes=2, max_steps=15)
    assert all(np.array_equal(a, b) for k in paths for a, b in zip(paths[k], again[k], strict=True))
    mean, deg = media.heading([np.array([[0.0, 0.0], [0.0, 2.0]])])
    assert np.allclose(mean, [0, 2]) and deg == pytest.approx(90.0)


def test_a_run_writes_maps_and_a_video_and_w_b_counts_only_metric_rows(tmp_path, monkeypatch):
    from tests.test_smoke import run

    run_dir = tmp_path / "run"
    monkeypatch.setenv("WANDB_MODE", "offline")
    run("run.py", "schedule=smoke", "schedule.n_tasks=3", "media.maps_every=2", "logger.mode=offline",
        "progress_bar=false", f"hydra.run.dir={run_dir}")
    maps = sorted(p.name for p in (run_dir / "maps").iterdir())
    # the first checkpoint (400 steps), two tasks later (1200), and none at the end: it was just drawn
    assert maps == ["subpolicies_step00000000400.png", "subpolicies_step00000001200.png"]
    assert (run_dir / "video.gif").read_bytes()[:3] == b"GIF"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(wandb_local_history(run_dir)) == len(rows)
    everything = wandb_local_history(run_dir, media=True)
    kinds = [k for r in everything for k in r if k.endswith("/_type")]
    assert kinds == ["maps/subpolicies/_type", "maps/subpolicies/_type", "video/episode/_type"]


@pytest.mark.parametrize("override", ["media.maps_every=-1", "media.video=maybe", "media.video_size=8",
                                      "media.video_every=0"])
def test_media_config_errors_name_the_key(compose, override):
    with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")):
        validate(compose(override))


def test_drawing_maps_at_every_checkpoint_does_not_change_the_run(tmp_path):
    from stable_baselines3.common.save_util import load_from_zip_file

    from mlsh import checkpoint
    from tests.helpers import smoke_iterations

    def strip(rows):
        return [{k: v for k, v in r.items() if k not in ("steps_per_second", "time_minutes")} for r in rows]

    args = ("env=four_rooms", "schedule.n_tasks=3", "schedule.n_groups=2", "schedule.stagger=wrapped")
    drawn = smoke_iterations(tmp_path / "drawn", *args, "media.maps_every=1")
    plain = smoke_iterations(tmp_path / "plain", *args, "media.maps_every=0", "media.video=false")
    assert len(list((tmp_path / "drawn" / "maps").glob("masters_*.png"))) == 3
    assert not (tmp_path / "plain" / "maps").exists()
    assert strip(drawn) == strip(plain)
    for k in range(4):
        a = load_from_zip_file(checkpoint.latest(tmp_path / "drawn") / f"sub{k}.zip")[1]["policy"]
        b = load_from_zip_file(checkpoint.latest(tmp_path / "plain") / f"sub{k}.zip")[1]["policy"]
        assert all(th.equal(a[n], b[n]) for n in a)


def test_the_last_maps_are_drawn_at_the_end_also_without_a_video(tmp_path):
    from tests.helpers import smoke_iterations

    smoke_iterations(tmp_path / "run", "schedule.n_tasks=4", "media.maps_every=2", "media.video=false")
    maps = sorted(p.name for p in (tmp_path / "run" / "maps").iterdir())
    # the first checkpoint (400 steps), two tasks later (1200), and the end (1600)
    assert maps == [f"subpolicies_step{s:011d}.png" for s in (400, 1200, 1600)]
    assert not (tmp_path / "run" / "video.gif").exists()
