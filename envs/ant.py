"""Ant task distributions of the paper: Twowalk, the ant maze and the obstacle course (REFERENCE.md section 2).

Every env is gymnasium's ``Ant-v5`` robot and physics (the ``ant.xml`` that the installed gymnasium ships: timestep
0.01, frame_skip 5, RK4, gear 150; the original's obstacle course used timestep 0.005 and a 41 kg ant) with the
task's scenery added in code through ``mujoco.MjSpec``. Nothing is copied from the original XML. All three share one
robot and one observation layout, so sub-policies trained on one task distribution can be transferred to another
(the paper fine-tunes a master over Twowalk sub-policies on the obstacle course):

* observation (29, float64): the ant's ``qpos`` (15: torso x, y, z, orientation quaternion, 8 joint angles) then
  its ``qvel`` (14). The original's AntBandits appends a constant 0 (30 values); it is dropped here. The task is not
  observed (the original slices the target's joints off, ``qpos[:-2]``); ``AntTwoWalkEnv(relative_to_goal=True)``
  measures x, y from the goal instead, which reveals the task.
* the scenery never adds degrees of freedom: targets, goal markers, maze blocks and the monster are *mocap* bodies
  moved through ``data.mocap_pos``. One compiled model serves every task and ``qpos``/``qvel`` are the ant's only.
* contacts: the floor and all scenery use ``contype=0`` and ``conaffinity=1``, so they touch the ant (``contype=1``)
  but never one another; markers (targets, goals, the enemy zone) do not collide at all.
* no env terminates (as in the original); the registered ``max_episode_steps`` truncates.

Task API (shared by every env in ``envs/``): ``sample_task(rng)`` draws a task with the caller's RNG,
``set_task(task)`` or ``reset(options={"task": task})`` selects it, it applies from the next reset and is kept across
episodes until changed, and ``info["task"]`` reports the task of the running episode. Randomness comes only from
``self.np_random``.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium.envs.mujoco
import mujoco
import numpy as np
from gymnasium import utils
from gymnasium.envs.mujoco import MujocoEnv
from gymnasium.spaces import Box

ANT_XML = Path(gymnasium.envs.mujoco.__file__).parent / "assets" / "ant.xml"
OBS_SIZE = 29  # ant qpos (15) + qvel (14)

_RED = (0.9, 0.1, 0.1, 1.0)
_GREEN = (0.1, 0.8, 0.1, 1.0)
_WALL = (0.55, 0.45, 0.35, 1.0)
_BLOCK = (0.45, 0.45, 0.6, 1.0)

# AntMaze: a 3x3 grid of blocks (centres, REFERENCE.md AntObstaclesGen-v1) and the 9 layouts. A layout lists the
# cells whose block is moved away (besides (8, 0), next to the start, which is always open) and the goal.
MAZE_CELLS: tuple[tuple[float, float], ...] = tuple((x, y) for x in (8.0, 24.0, 40.0) for y in (16.0, 0.0, -16.0))
MAZE_ALWAYS_OPEN: tuple[tuple[float, float], ...] = ((8.0, 0.0),)
MAZE_LAYOUTS: tuple[tuple[tuple[tuple[float, float], ...], tuple[float, float]], ...] = (
    (((8, 16),), (8, 24)),
    (((8, -16),), (8, -24)),
    (((24, 16), (24, 0)), (24, 24)),
    (((24, 0), (24, -16)), (24, -24)),
    (((24, 0), (40, 0)), (48, 0)),
    (((24, 0), (40, 0), (40, 16)), (40, 24)),
    (((24, 0), (40, 0), (40, -16)), (40, -24)),
    (((8, 16), (24, 16)), (32, 16)),
    (((8, -16), (24, -16)), (32, -16)),
)

# AntObstacle: wall segments (x0, y0, x1, y1), REFERENCE.md AntObstacles-v1. Four outer walls, then two inner ones.
OBSTACLE_WALLS: tuple[tuple[float, float, float, float], ...] = (
    (-7.0, -3.0, 63.0, -3.0),
    (-7.0, 40.0, 63.0, 40.0),
    (-3.0, -7.0, -3.0, 63.0),
    (40.0, -7.0, 40.0, 63.0),
    (30.0, 25.0, 40.0, 25.0),
    (30.0, -5.0, 30.0, 25.0),
)


# -- model building --------------------------------------------------------------------------------------------------
def ant_spec(floor_half_size: float = 80.0) -> mujoco.MjSpec:
    """Gymnasium's ant with a larger floor that only the ant collides with (``contype=0``)."""
    spec = mujoco.MjSpec.from_file(str(ANT_XML))
    floor = spec.geom("floor")
    floor.size = [floor_half_size, floor_half_size, floor.size[2]]
    floor.contype = 0
    return spec


def _add_geom(body: mujoco.MjsBody, name: str, kind: mujoco.mjtGeom, size, pos, rgba, collide: bool):
    return body.add_geom(name=name, type=kind, size=list(size), pos=list(pos), rgba=list(rgba),
                         contype=0, conaffinity=int(collide), margin=0.0)


def add_wall(spec: mujoco.MjSpec, name: str, segment: Sequence[float], half_thickness: float,
             half_height: float) -> None:
    """A static box wall along an axis-aligned segment (x0, y0, x1, y1), its ends extended by ``half_thickness``."""
    x0, y0, x1, y1 = map(float, segment)
    if x0 != x1 and y0 != y1:
        raise ValueError(f"wall {name} must be axis-aligned, got segment {segment}")
    half = (abs(x1 - x0) / 2 + half_thickness, abs(y1 - y0) / 2 + half_thickness, half_height)
    # A body of its own: geoms of the world body skip the broadphase and are tested against every ant body.
    body = spec.worldbody.add_body(name=name, pos=[(x0 + x1) / 2, (y0 + y1) / 2, half_height])
    _add_geom(body, f"{name}_geom", mujoco.mjtGeom.mjGEOM_BOX, half, (0.0, 0.0, 0.0), _WALL, collide=True)


def pin_broadphase_axes(spec: mujoco.MjSpec, extent: float, reach: float = 1000.0) -> None:
    """Keep MuJoCo's broadphase boxes of axis-aligned walls tight (speed only; the physics is unchanged).

    The broadphase sweeps bounding boxes in the frame of the principal axes of all non-world geom centres. For an
    arena of walls that frame often comes out rotated, which turns a long wall's box into a large square overlapping
    the ant, so every wall near the ant goes through the narrow phase at each of RK4's 20 collision passes per step
    (the obstacle course ran at 0.7x Ant-v5). Four invisible, non-colliding geoms far out on the x and y axes pin the
    principal axes to the world's. They would inflate the model's extent, which scales the renderer's clipping
    planes, so the extent is set to the arena's.
    """
    body = spec.worldbody.add_body(name="broadphase_axes")
    for i, pos in enumerate(((reach, 0, 0), (-reach, 0, 0), (0, reach / 2, 0), (0, -reach / 2, 0))):
        geom = _add_geom(body, f"broadphase_axis{i}", mujoco.mjtGeom.mjGEOM_SPHERE, (0.01, 0, 0), pos,
                         (0, 0, 0, 0), collide=False)
        geom.group = 5  # hidden by default
    spec.stat.extent = float(extent)


def add_mocap(spec: mujoco.MjSpec, name: str, kind: mujoco.mjtGeom, size, pos, rgba, collide: bool) -> None:
    """A mocap body (moved through ``data.mocap_pos``, no degrees of freedom) carrying one geom."""
    body = spec.worldbody.add_body(name=name, pos=list(pos), mocap=True)
    _add_geom(body, f"{name}_geom", kind, size, (0.0, 0.0, 0.0), rgba, collide)


# -- shared base -----------------------------------------------------------------------------------------------------
class _AntTaskEnv(MujocoEnv, utils.EzPickle):
    """Ant-v5's robot and physics, a task applied at reset, an optional posture reset every few steps."""

    metadata = {"render_modes": ["human", "rgb_array", "depth_array", "rgbd_tuple"]}
    n_tasks: int = 1
    _qvel_noise: str = "normal"  # "normal": N(0, scale^2) as Ant-v5; "uniform": U(-scale, scale)

    def __init__(
        self,
        *,
        start: Sequence[float],
        frame_skip: int,
        reset_noise_scale: float,
        reset_qvel_noise_scale: float,
        posture_reset_interval: int | None,
        default_camera_config: dict[str, Any],
        **kwargs,
    ):
        self.start = np.asarray(start, dtype=np.float64)
        self.reset_noise_scale = float(reset_noise_scale)
        self.reset_qvel_noise_scale = float(reset_qvel_noise_scale)
        self.posture_reset_interval = int(posture_reset_interval or 0)
        self.task = 0  # the running episode's task
        self._next_task = 0  # applied at the next reset
        self._t = 0  # steps since reset
        MujocoEnv.__init__(self, str(ANT_XML), frame_skip, observation_space=None,
                           default_camera_config=default_camera_config, **kwargs)
        self.metadata = {**type(self).metadata, "render_fps": int(np.round(1.0 / self.dt))}
        self.observation_space = Box(-np.inf, np.inf, shape=(OBS_SIZE,), dtype=np.float64)
        self.init_qpos[:2] = self.start
        self._torso = self.model.body("torso").id

    # -- model -------------------------------------------------------------------------------------------------------
    def _build_spec(self) -> mujoco.MjSpec:
        raise NotImplementedError

    def _initialize_simulation(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        model = self._build_spec().compile()
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        return model, mujoco.MjData(model)

    def _step_mujoco_simulation(self, ctrl, n_frames) -> None:
        # As MujocoEnv, minus mj_rnePostConstraint: no observation or reward here reads cfrc_ext.
        self.data.ctrl[:] = ctrl
        mujoco.mj_step(self.model, self.data, nstep=n_frames)

    def _mocap(self, body: str) -> int:
        return int(self.model.body_mocapid[self.model.body(body).id])

    # -- task API ----------------------------------------------------------------------------------------------------
    @classmethod
    def sample_task(cls, rng: np.random.Generator) -> int:
        """A task drawn uniformly from ``range(n_tasks)`` with the caller's RNG."""
        return int(rng.integers(cls.n_tasks))

    def check_task(self, task: Any) -> int:
        """``task`` as an int, or a ValueError naming the tasks there are."""
        try:
            value = operator.index(task)
        except TypeError:
            value = None
        if value not in range(self.n_tasks):
            raise ValueError(f"{type(self).__name__} task must be one of {list(range(self.n_tasks))}, got {task!r}")
        return value

    def set_task(self, task: int) -> None:
        """Select the task of the next episodes; it applies from the next reset."""
        self._next_task = self.check_task(task)

    # -- gymnasium API -----------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if options and "task" in options:
            self.set_task(options["task"])
        return super().reset(seed=seed, options=options)

    def reset_model(self) -> np.ndarray:
        self.task = self._next_task
        self._t = 0
        self._apply_task()
        self.set_state(*self._reset_state(self.np_random))
        return self._get_obs()

    def _get_reset_info(self) -> dict[str, Any]:
        return {"task": self.task, "x_position": self.data.qpos[0], "y_position": self.data.qpos[1]}

    def step(self, action):
        d, task = self.data, np.array([self.task])
        self._before_rows(d.qpos[None], d.mocap_pos[None])
        xy_before = d.qpos[None, :2].copy()
        self.do_simulation(action, self.frame_skip)
        self._t += 1
        rewards, terms = self._reward_rows(xy_before, np.asarray(action, dtype=np.float64)[None], d.qpos[None],
                                           {name: getattr(d, name)[None] for name in self.batch_outputs}, task)
        info = {key: float(value[0]) for key, value in terms.items()}
        if self.posture_reset_interval and self._t % self.posture_reset_interval == 0:
            self._reset_posture()
        info["task"] = self.task
        info["x_position"] = self.data.qpos[0]
        info["y_position"] = self.data.qpos[1]
        if self.render_mode == "human":
            self.render()
        return self._get_obs(), float(rewards[0]), False, False, info

    # -- many envs in one mujoco.batch.Batch (envs.batch.MujocoBatchVecEnv) --------------------------------------
    def batch_vars(self, n: int) -> dict[str, np.ndarray]:
        return {"t": np.zeros(n, dtype=np.int64)}  # steps since reset (the posture resets)

    def batch_reset(self, venv, ids: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """As ``reset_model`` for the envs ``ids``, whose simulations were just reset to the model's defaults."""
        task = venv.vars["next_task"][ids]
        venv.vars["task"][ids] = task
        venv.vars["t"][ids] = 0
        mocap = venv.mocap_pos[ids]
        self._apply_task_rows(mocap, task)
        venv.mocap_pos[ids] = mocap
        for i in ids:
            venv.qpos[i], venv.qvel[i] = self._reset_state(venv.rngs[i])
        venv.sim.forward(ids)
        qpos = venv.qpos[ids]
        infos = [{"task": int(k), "x_position": x, "y_position": y}
                 for k, x, y in zip(task, qpos[:, 0], qpos[:, 1], strict=True)]
        return self._obs_rows(qpos, venv.qvel[ids], task), infos

    def batch_step(self, venv, actions: np.ndarray):
        """As ``step`` for every env of ``venv``: (observations, rewards, terminated, info columns)."""
        task = venv.vars["task"]
        self._before_rows(venv.qpos, venv.mocap_pos)
        xy_before = venv.qpos[:, :2].copy()
        venv.ctrl[:] = actions
        venv.sim.step(nstep=self.frame_skip)
        t = venv.vars["t"]
        t += 1
        rewards, info = self._reward_rows(xy_before, actions.astype(np.float64), venv.qpos, venv.outputs, task)
        if self.posture_reset_interval:
            ids = np.flatnonzero(t % self.posture_reset_interval == 0)
            for i in ids:
                venv.qpos[i], venv.qvel[i] = self._posture_state(venv.rngs[i], venv.qpos[i, :2])
            if len(ids):
                venv.sim.forward(ids)
        info.update(task=task.copy(), x_position=venv.qpos[:, 0].copy(), y_position=venv.qpos[:, 1].copy())
        return self._obs_rows(venv.qpos, venv.qvel, task), rewards, np.zeros(len(task), dtype=bool), info

    # -- pieces, on rows of envs (one row here, many in envs.batch.MujocoBatchVecEnv) ---------------------------
    batch_outputs: tuple[str, ...] = ()  # derived MjData fields that the reward reads after the physics step

    def _get_obs(self) -> np.ndarray:
        return self._obs_rows(self.data.qpos[None], self.data.qvel[None], np.array([self.task]))[0]

    def _obs_rows(self, qpos: np.ndarray, qvel: np.ndarray, task: np.ndarray) -> np.ndarray:
        return np.concatenate((qpos, qvel), axis=1)

    def _reset_state(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A reset's (qpos, qvel): the start posture plus noise drawn from ``rng`` (qpos first, then qvel)."""
        qpos = self.init_qpos + rng.uniform(-self.reset_noise_scale, self.reset_noise_scale, self.model.nq)
        scale = self.reset_qvel_noise_scale
        if self._qvel_noise == "uniform":
            return qpos, self.init_qvel + rng.uniform(-scale, scale, self.model.nv)
        return qpos, self.init_qvel + scale * rng.standard_normal(self.model.nv)

    def _reset_posture(self) -> None:
        """Re-randomise every joint except x, y around the upright start posture, as the original every 200 steps.

        Done after the step's reward, so the observation returned shows the new posture; the original did it at
        the start of the next step, after the policy had acted on the old observation.
        """
        self.set_state(*self._posture_state(self.np_random, self.data.qpos[:2]))

    def _posture_state(self, rng: np.random.Generator, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A posture reset's (qpos, qvel): a reset's noise around the start posture, at the torso's ``xy``."""
        qpos, qvel = self._reset_state(rng)
        qpos[:2] = xy
        return qpos, qvel

    def _apply_task(self) -> None:
        """Move the scenery for ``self.task`` (``data`` was just reset)."""
        self._apply_task_rows(self.data.mocap_pos[None], np.array([self.task]))

    def _apply_task_rows(self, mocap_pos: np.ndarray, task: np.ndarray) -> None:
        """Move the scenery of freshly reset envs (``mocap_pos``: (n, nmocap, 3), written in place) for ``task``."""

    def _before_rows(self, qpos: np.ndarray, mocap_pos: np.ndarray) -> None:
        """Per-step scenery update before the physics step (``mocap_pos`` written in place)."""

    def _reward_rows(self, xy_before: np.ndarray, action: np.ndarray, qpos: np.ndarray,
                     outputs: dict[str, np.ndarray], task: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Rewards (n,) and reward terms of a step, from the torso's xy before it and the state after it."""
        raise NotImplementedError


# -- Twowalk ---------------------------------------------------------------------------------------------------------
class AntTwoWalkEnv(_AntTaskEnv):
    """The paper's "Ant Twowalk" (REFERENCE.md AntBandits-v1): walk to the goal at (5, 0) (task 0) or (0, 5) (task 1).

    A red non-colliding sphere (radius ``target_radius``) marks the goal, ``target_height`` above the floor. Reward
    ``"reference"`` (default, the original): ``-sqrt(d) / distance_scale`` with ``d`` the 3-D distance between the
    centre of mass of the torso subtree (the whole ant) and the target point. Reward ``"progress"`` (a denser,
    more learnable option): the decrease of the torso's xy distance to the goal per second, minus
    ``ctrl_cost_weight * |a|^2``. Reset noise: qpos U(+-0.1), qvel U(+-0.005), as the original. Never terminates.
    Paper: K=2, N=200, W=20, U=40, 1000 steps.
    """

    n_tasks = 2
    _qvel_noise = "uniform"
    REWARDS = ("reference", "progress")

    def __init__(
        self,
        goals: Sequence[Sequence[float]] = ((5.0, 0.0), (0.0, 5.0)),
        reward: str = "reference",
        distance_scale: float = 3000.0,
        ctrl_cost_weight: float = 0.5,
        target_height: float = 1.0,
        target_radius: float = 0.4,
        relative_to_goal: bool = False,
        start: Sequence[float] = (0.0, 0.0),
        reset_noise_scale: float = 0.1,
        reset_qvel_noise_scale: float = 0.005,
        frame_skip: int = 5,
        default_camera_config: dict[str, Any] | None = None,
        **kwargs,
    ):
        utils.EzPickle.__init__(self, goals, reward, distance_scale, ctrl_cost_weight, target_height, target_radius,
                                relative_to_goal, start, reset_noise_scale, reset_qvel_noise_scale, frame_skip,
                                default_camera_config, **kwargs)
        if reward not in self.REWARDS:
            raise ValueError(f"reward must be one of {list(self.REWARDS)}, got {reward!r}")
        self.goals = np.asarray(goals, dtype=np.float64)
        if self.goals.shape != (self.n_tasks, 2):
            raise ValueError(f"goals must be {self.n_tasks} (x, y) pairs, got {goals!r}")
        self.reward_type = reward
        self.distance_scale = float(distance_scale)
        self.ctrl_cost_weight = float(ctrl_cost_weight)
        self.target_height = float(target_height)
        self.target_radius = float(target_radius)
        self.relative_to_goal = bool(relative_to_goal)
        self._targets = np.array([[x, y, self.target_height] for x, y in self.goals])  # (n_tasks, 3)
        self.target = self._targets[0].copy()
        camera = {"distance": 14.0, "elevation": -55.0, "azimuth": 225.0, "lookat": np.array([2.0, 2.0, 0.0])}
        super().__init__(start=start, frame_skip=frame_skip, reset_noise_scale=reset_noise_scale,
                         reset_qvel_noise_scale=reset_qvel_noise_scale, posture_reset_interval=None,
                         default_camera_config=default_camera_config or camera, **kwargs)
        self._target_mocap = self._mocap("target")

    def _build_spec(self) -> mujoco.MjSpec:
        spec = ant_spec()
        add_mocap(spec, "target", mujoco.mjtGeom.mjGEOM_SPHERE, (self.target_radius, 0, 0), self.target, _RED,
                  collide=False)
        return spec

    batch_outputs = ("subtree_com",)

    def _apply_task(self) -> None:
        self.target = self._targets[self.task].copy()
        super()._apply_task()

    def _apply_task_rows(self, mocap_pos, task):
        mocap_pos[:, self._target_mocap] = self._targets[task]

    def _obs_rows(self, qpos, qvel, task):
        obs = np.concatenate((qpos, qvel), axis=1)
        if self.relative_to_goal:
            obs[:, :2] -= self._targets[task, :2]
        return obs

    def _reward_rows(self, xy_before, action, qpos, outputs, task):
        target = self._targets[task]
        vec = outputs["subtree_com"][:, self._torso] - target
        distance = np.sqrt(np.sum(vec * vec, axis=1))
        if self.reward_type == "reference":
            return -np.sqrt(distance) / self.distance_scale, {"distance": distance}
        before = xy_before - target[:, :2]
        after = qpos[:, :2] - target[:, :2]
        progress = (np.sqrt(np.sum(before * before, axis=1)) - np.sqrt(np.sum(after * after, axis=1))) / self.dt
        ctrl_cost = self.ctrl_cost_weight * np.sum(action * action, axis=1)
        return progress - ctrl_cost, {"distance": distance, "reward_progress": progress, "reward_ctrl": -ctrl_cost}


# -- maze ------------------------------------------------------------------------------------------------------------
class AntMazeEnv(_AntTaskEnv):
    """The paper's ant maze (REFERENCE.md AntObstaclesGen-v1): 9 layouts of a 3x3 block maze; task = layout 0..8.

    The arena spans ``arena`` = (x_min, x_max, y_min, y_max) with walls on its four sides (the reference gives no
    thickness here; 0.3 as the obstacle course); nine blocks of full size ``block_size`` stand at ``MAZE_CELLS``. A
    layout (``MAZE_LAYOUTS``) opens some cells (their blocks are lowered under the floor at reset) and puts the goal,
    marked by a non-colliding green box at ``goal_marker_height``. The ant starts at ``start`` = (2, 0). Reward: per
    axis, the torso's velocity toward the goal (sign of goal - position times velocity), minus
    ``ctrl_cost_weight * |a|^2``. Every ``posture_reset_interval`` steps the posture is re-randomised upright at the
    current x, y. Unlike the original (hard-coded to layout 6), the layout is the task, drawn from all nine.
    Paper: K=3 (inferred), N=200, W=20, U=40, 1000 steps.
    """

    n_tasks = len(MAZE_LAYOUTS)

    def __init__(
        self,
        ctrl_cost_weight: float = 0.1,
        arena: Sequence[float] = (0.0, 48.0, -24.0, 24.0),
        block_size: Sequence[float] = (15.2, 15.2, 10.0),
        wall_half_thickness: float = 0.3,
        wall_half_height: float = 5.0,
        goal_marker_height: float = 10.0,
        start: Sequence[float] = (2.0, 0.0),
        posture_reset_interval: int | None = 200,
        reset_noise_scale: float = 0.1,
        reset_qvel_noise_scale: float = 0.1,
        frame_skip: int = 5,
        default_camera_config: dict[str, Any] | None = None,
        **kwargs,
    ):
        utils.EzPickle.__init__(self, ctrl_cost_weight, arena, block_size, wall_half_thickness, wall_half_height,
                                goal_marker_height, start, posture_reset_interval, reset_noise_scale,
                                reset_qvel_noise_scale, frame_skip, default_camera_config, **kwargs)
        self.ctrl_cost_weight = float(ctrl_cost_weight)
        self.arena = tuple(float(v) for v in arena)
        self.block_size = np.asarray(block_size, dtype=np.float64)
        self.wall_half_thickness = float(wall_half_thickness)
        self.wall_half_height = float(wall_half_height)
        self.goal_marker_height = float(goal_marker_height)
        self._goals = np.array([goal for _, goal in MAZE_LAYOUTS], dtype=np.float64)  # (n_tasks, 2)
        self.goal = self._goals[0].copy()
        x0, x1, y0, y1 = self.arena
        camera = {"distance": 1.45 * max(x1 - x0, y1 - y0), "elevation": -90.0, "azimuth": 90.0,
                  "lookat": np.array([(x0 + x1) / 2, (y0 + y1) / 2, 0.0])}
        super().__init__(start=start, frame_skip=frame_skip, reset_noise_scale=reset_noise_scale,
                         reset_qvel_noise_scale=reset_qvel_noise_scale, posture_reset_interval=posture_reset_interval,
                         default_camera_config=default_camera_config or camera, **kwargs)
        self._block_mocaps = np.array([self._mocap(f"block{i}") for i in range(len(MAZE_CELLS))])
        self._goal_mocap = self._mocap("goal")
        # which blocks each layout opens: (n_layouts, n_cells) booleans
        cells = np.asarray(MAZE_CELLS)
        self._open = np.zeros((self.n_tasks, len(cells)), dtype=bool)
        for task, (open_cells, _) in enumerate(MAZE_LAYOUTS):
            for cell in (*MAZE_ALWAYS_OPEN, *open_cells):
                self._open[task, np.flatnonzero((cells == np.asarray(cell, dtype=np.float64)).all(axis=1))] = True

    def _build_spec(self) -> mujoco.MjSpec:
        spec = ant_spec()
        x0, x1, y0, y1 = self.arena
        for name, segment in (("wall_south", (x0, y0, x1, y0)), ("wall_north", (x0, y1, x1, y1)),
                              ("wall_west", (x0, y0, x0, y1)), ("wall_east", (x1, y0, x1, y1))):
            add_wall(spec, name, segment, self.wall_half_thickness, self.wall_half_height)
        half = self.block_size / 2
        for i, (x, y) in enumerate(MAZE_CELLS):
            add_mocap(spec, f"block{i}", mujoco.mjtGeom.mjGEOM_BOX, half, (x, y, half[2]), _BLOCK, collide=True)
        add_mocap(spec, "goal", mujoco.mjtGeom.mjGEOM_BOX, (0.5, 0.5, 0.5), (*MAZE_LAYOUTS[0][1],
                  self.goal_marker_height), _GREEN, collide=False)
        pin_broadphase_axes(spec, extent=max(x1 - x0, y1 - y0))
        return spec

    def block_in_place(self) -> np.ndarray:
        """Whether each block of ``MAZE_CELLS`` stands in the arena (True) or is moved away (False)."""
        return self.data.mocap_pos[self._block_mocaps, 2] > 0

    def _apply_task(self) -> None:
        self.goal = self._goals[self.task].copy()
        super()._apply_task()

    def _apply_task_rows(self, mocap_pos, task):
        # the envs were just reset: every block stands at its cell; lower the open ones fully under the floor
        blocks = mocap_pos[:, self._block_mocaps, 2]
        mocap_pos[:, self._block_mocaps, 2] = np.where(self._open[task], -self.block_size[2], blocks)
        mocap_pos[:, self._goal_mocap, :2] = self._goals[task]

    def _reward_rows(self, xy_before, action, qpos, outputs, task):
        xy = qpos[:, :2]
        velocity = (xy - xy_before) / self.dt
        toward = np.sum(np.sign(self._goals[task] - xy) * velocity, axis=1)
        ctrl_cost = self.ctrl_cost_weight * np.sum(action * action, axis=1)
        return toward - ctrl_cost, {"reward_toward_goal": toward, "reward_ctrl": -ctrl_cost}


# -- obstacle course -------------------------------------------------------------------------------------------------
class AntObstacleEnv(_AntTaskEnv):
    """The paper's ant obstacle course (REFERENCE.md AntObstacles-v1), a single task for transfer.

    Walls ``walls`` (axis-aligned segments), a red non-colliding enemy zone of radius ``zone_radius`` at
    ``zone_center``, and a colliding monster (a mocap ellipsoid of half-sizes ``monster_size``) that starts at the zone
    centre at every reset. On every step that begins with the ant's torso inside the zone, the monster is teleported
    ``monster_step`` per axis toward the ant (the sign of the offset, as the original) before the physics step; it
    knocks the ant back through contact. Outside the zone it stays where it is. Reward ``"sparse"`` (default, the
    paper): 1 on every step that ends with the torso within ``goal_radius`` of ``goal`` (green marker), else 0; the
    default radius sqrt(30) is the original's only sparse ant radius (AntObstaclesBig-v1). Reward ``"dense"`` (the
    released code): ``-(2(x - tx) + 2(y - ty))^2 / dense_scale`` with ``(tx, ty) = dense_target``. The posture is
    re-randomised upright every ``posture_reset_interval`` steps. Paper: K=2, N=200, 2000 steps.
    """

    n_tasks = 1
    REWARDS = ("sparse", "dense")

    def __init__(
        self,
        reward: str = "sparse",
        goal: Sequence[float] = (38.0, 38.0),
        goal_radius: float = float(np.sqrt(30.0)),
        dense_target: Sequence[float] = (50.0, 50.0),
        dense_scale: float = 1e5,
        walls: Sequence[Sequence[float]] = OBSTACLE_WALLS,
        wall_half_thickness: float = 0.3,
        wall_half_height: float = 5.0,
        zone_center: Sequence[float] = (0.0, 20.0),
        zone_radius: float = 15.0,
        monster_step: float = 1.0,
        monster_size: Sequence[float] = (3.0, 3.0, 3.0),
        start: Sequence[float] = (0.0, 0.0),
        posture_reset_interval: int | None = 200,
        reset_noise_scale: float = 0.1,
        reset_qvel_noise_scale: float = 0.1,
        frame_skip: int = 5,
        default_camera_config: dict[str, Any] | None = None,
        **kwargs,
    ):
        utils.EzPickle.__init__(self, reward, goal, goal_radius, dense_target, dense_scale, walls,
                                wall_half_thickness, wall_half_height, zone_center, zone_radius, monster_step,
                                monster_size, start, posture_reset_interval, reset_noise_scale,
                                reset_qvel_noise_scale, frame_skip, default_camera_config, **kwargs)
        if reward not in self.REWARDS:
            raise ValueError(f"reward must be one of {list(self.REWARDS)}, got {reward!r}")
        self.reward_type = reward
        self.goal = np.asarray(goal, dtype=np.float64)
        self.goal_radius = float(goal_radius)
        self.dense_target = np.asarray(dense_target, dtype=np.float64)
        self.dense_scale = float(dense_scale)
        self.walls = [tuple(map(float, w)) for w in walls]
        self.wall_half_thickness = float(wall_half_thickness)
        self.wall_half_height = float(wall_half_height)
        self.zone_center = np.asarray(zone_center, dtype=np.float64)
        self.zone_radius = float(zone_radius)
        self.monster_step = float(monster_step)
        self.monster_size = np.asarray(monster_size, dtype=np.float64)
        middle = (np.asarray(start, dtype=np.float64) + self.goal) / 2
        camera = {"distance": 1.6 * float(np.abs(self.goal - middle).max() * 2) + 10.0, "elevation": -90.0,
                  "azimuth": 90.0, "lookat": np.array([*middle, 0.0])}
        super().__init__(start=start, frame_skip=frame_skip, reset_noise_scale=reset_noise_scale,
                         reset_qvel_noise_scale=reset_qvel_noise_scale, posture_reset_interval=posture_reset_interval,
                         default_camera_config=default_camera_config or camera, **kwargs)
        self._monster_mocap = self._mocap("monster")

    def _build_spec(self) -> mujoco.MjSpec:
        spec = ant_spec()
        for i, segment in enumerate(self.walls):
            add_wall(spec, f"wall{i}", segment, self.wall_half_thickness, self.wall_half_height)
        _add_geom(spec.worldbody, "enemy_zone", mujoco.mjtGeom.mjGEOM_CYLINDER, (self.zone_radius, 0.005),
                  (*self.zone_center, 0.005), (0.9, 0.1, 0.1, 0.35), collide=False)
        _add_geom(spec.worldbody, "goal_marker", mujoco.mjtGeom.mjGEOM_CYLINDER, (self.goal_radius, 0.01),
                  (*self.goal, 0.01), (0.1, 0.8, 0.1, 0.5), collide=False)
        # centred on the floor: a dome whose side, at the ant's height, pushes the ant away rather than down
        add_mocap(spec, "monster", mujoco.mjtGeom.mjGEOM_ELLIPSOID, self.monster_size, (*self.zone_center, 0.0),
                  _RED, collide=True)
        walls_xy = np.array(self.walls).reshape(-1, 2)
        pin_broadphase_axes(spec, extent=float(np.ptp(walls_xy, axis=0).max()))
        return spec

    def monster_xy(self) -> np.ndarray:
        return self.data.mocap_pos[self._monster_mocap, :2].copy()

    def _before_rows(self, qpos, mocap_pos):
        offset = qpos[:, :2] - self.zone_center
        inside = np.flatnonzero(np.sum(offset * offset, axis=1) < self.zone_radius**2)
        if len(inside):
            monster = mocap_pos[inside, self._monster_mocap, :2]
            step = self.monster_step * np.sign(qpos[inside, :2] - monster)
            mocap_pos[inside, self._monster_mocap, :2] = monster + step

    def _reward_rows(self, xy_before, action, qpos, outputs, task):
        xy = qpos[:, :2]
        if self.reward_type == "sparse":
            to_goal = xy - self.goal
            return (np.sum(to_goal * to_goal, axis=1) < self.goal_radius**2).astype(np.float64), {}
        s = 2.0 * np.sum(xy - self.dense_target, axis=1)
        return -s * s / self.dense_scale, {}
