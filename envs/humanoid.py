"""Humanoid Walk/Crawl and the Walk-then-Crawl course: the paper's humanoid tasks (REFERENCE.md section 2).

**Model.** gymnasium's own ``assets/humanoid.xml`` (found through the installed package) plus, added with
``mujoco.MjSpec``, a ceiling slab: one box of half-extents ``slab_half_extents`` (11.5 x 11.5 x 0.5, as the
original) whose underside is at ``slab_bottom`` (z = 1.0). It is a mocap body, i.e. a kinematic, immovable
obstacle (the original used a 529 t box on a y-slide, equally immovable for the humanoid) that ``reset`` places
through ``data.mocap_pos``. Being a mocap body it adds no joint, so ``qpos``/``qvel`` and bodies 1-13 are exactly
Humanoid-v5's. One model is compiled once per env, in ``__init__``; nothing is compiled per step. A standing
humanoid (torso at z 1.4, head top at 1.68) cannot pass under the slab; a lying one (body below ~0.4) fits.
The floor plane, infinite for collisions, is drawn ``floor_half_size`` wide so that the course renders on a floor.

**Observation (both envs, 348 values, the same as Humanoid-v5 with its defaults).** qpos without root x, y (22),
qvel (23), then for the 13 humanoid bodies (the slab excluded) cinert (130) and cvel (78), qfrc_actuator of the
17 hinge dofs (17) and cfrc_ext (78). ``cfrc_ext`` is computed by MuJoCo within each step, by
``mj_rnePostConstraint`` at the state before the last substep: the model carries an accelerometer on the torso
(``cfrc_probe``, no other use), whose evaluation needs it. Humanoid-v5 instead calls ``mj_rnePostConstraint``
after the step, from the quantities that RK4's last stage left, which gives other contact forces; the probe lets
``envs.batch`` step many humanoids in one C call with the same observations. The original's course put root x
at index 0 where Walk/Crawl had z, so its walk/crawl sub-policies saw a different input in the course; here the
layout is identical in
:class:`HumanoidWalkCrawlEnv` and :class:`HumanoidCourseEnv` (index 0 is root z in both).

**Rewards (the original's, REFERENCE.md).** ``v = Δx_com / model.opt.timestep`` is the displacement of the
humanoid's centre of mass (slab excluded) over one env step divided by the *physics* timestep 0.003, as the
original did (so 5x the true velocity with frame_skip 5: the walk term 0.25 v equals Humanoid-v5's 1.25 x true
velocity). ``info["x_velocity"]`` is the true CoM velocity Δx_com / dt, as in Humanoid-v5, so
v = frame_skip * x_velocity. Costs: ``ctrl_cost_weight * |ctrl|^2`` and
``min(contact_cost_weight * |cfrc_ext|^2, contact_cost_max)`` over the 13 humanoid bodies.

- **Crawl (task 0):** ``crawl_forward_weight * crawl_direction * v - costs``; never terminates.
- **Walk (task 1):** ``[healthy_reward + walk_forward_weight * v if healthy] - costs``, healthy meaning the torso z
  is inside ``healthy_z_range`` (default (1, inf): the original's "done when z < 1"); terminates when unhealthy.

**Direction of crawling (a deliberate change).** The original's crawl task put the slab *behind* the start
(x in [-23.5, -0.5]) and paid *backward* motion. Here the sign is the argument ``crawl_direction``. Its default
+1 mirrors the layout: the slab lies ahead, x in [0.5, 23.5], and crawling *forward* pays, so walking and crawling
both travel +x, as they must in the course for the walk and crawl sub-policies to transfer.
``crawl_direction=-1`` gives the original's layout and reward. In both the slab's near edge is ``crawl_gap``
(0.5 m, as the original) from the start. In the walk task the slab is moved ``slab_away_y`` (30 m, the original's
slide value) sideways, out of reach.

**Course layout (:class:`HumanoidCourseEnv`, a deliberate change).** One direction of travel, +x: the humanoid
starts at x = 0 in walk mode; the slab covers x in [course_switch_x + crawl_gap, ... + 23] = [25.5, 48.5], y in
[-11.5, 11.5]. Once the root x passes ``course_switch_x`` (25, the original's threshold), i.e. reaches the slab's
start less the same 0.5 m gap from which the crawl task starts, the episode is in crawl mode for good: crawl reward
(forward), no termination. Switching at the slab edge itself would come too late: an upright walker's head touches
the edge before its root reaches it. In walk mode the walk reward and termination apply. The original instead
switched at x > 25 *after* the slab's x-range and then paid crawling back under it.

Task API (shared by every env in ``envs/``): ``sample_task(rng)`` draws a task with the caller's RNG,
``set_task(task)`` selects it from the next reset on (``reset(options={"task": task})`` sets and applies it), it is
kept across episodes until changed, and ``info["task"]`` reports the task of the running episode. Before any task
is set, Walk/Crawl runs the walk task, i.e. behaves as Humanoid-v5. All randomness
(the reset noise U(+-reset_noise_scale) on qpos and qvel, as Humanoid-v5) comes from ``self.np_random``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium.envs.mujoco
import mujoco
import numpy as np
from gymnasium import utils
from gymnasium.envs.mujoco import MujocoEnv
from gymnasium.spaces import Box

HUMANOID_XML = Path(gymnasium.envs.mujoco.__file__).parent / "assets" / "humanoid.xml"

DEFAULT_CAMERA_CONFIG = {  # Humanoid-v5's
    "trackbodyid": 1,
    "distance": 4.0,
    "lookat": np.array((0.0, 0.0, 2.0)),
    "elevation": -20.0,
}

CRAWL, WALK = 0, 1
TASK_NAMES = {CRAWL: "crawl", WALK: "walk"}


def build_model(
    slab_half_extents: tuple[float, float, float],
    floor_half_size: float,
    slab_rgba: tuple[float, float, float, float] = (0.35, 0.45, 0.75, 0.5),
) -> mujoco.MjModel:
    """gymnasium's humanoid plus a ceiling slab (a mocap box named ``slab``, last body), compiled once."""
    spec = mujoco.MjSpec.from_file(str(HUMANOID_XML))
    base_extent = spec.compile().stat.extent  # keep the humanoid's render scale (fog, clipping planes)
    floor = spec.geom("floor")
    floor.size = [floor_half_size, floor_half_size, floor.size[2]]
    spec.material("MatPlane").texrepeat = np.asarray(spec.material("MatPlane").texrepeat) * floor_half_size / 20.0
    # makes every step compute cfrc_ext (mj_rnePostConstraint, which the accelerometer needs): see the module doc
    spec.body("torso").add_site(name="cfrc_probe")
    spec.add_sensor(name="cfrc_probe", type=mujoco.mjtSensor.mjSENS_ACCELEROMETER, objtype=mujoco.mjtObj.mjOBJ_SITE,
                    objname="cfrc_probe")
    slab = spec.worldbody.add_body(name="slab", mocap=True, pos=[0.0, 0.0, -10.0])
    slab.add_geom(name="slab", type=mujoco.mjtGeom.mjGEOM_BOX, size=list(slab_half_extents), rgba=list(slab_rgba),
                  contype=1, conaffinity=1, condim=1)
    model = spec.compile()
    model.stat.extent = base_extent
    return model


class _HumanoidSlabEnv(MujocoEnv, utils.EzPickle):
    """Shared model, observation, reward terms and reset of the two humanoid envs."""

    metadata = {"render_modes": ["human", "rgb_array", "depth_array", "rgbd_tuple"]}
    n_tasks: int
    _default_task = 0
    _crawl_sign = 1  # +1: crawling pays motion toward +x

    def __init__(
        self,
        frame_skip: int,
        default_camera_config: dict[str, Any],
        walk_forward_weight: float,
        crawl_forward_weight: float,
        ctrl_cost_weight: float,
        contact_cost_weight: float,
        contact_cost_max: float,
        healthy_reward: float,
        healthy_z_range: tuple[float, float],
        terminate_when_unhealthy: bool,
        reset_noise_scale: float,
        slab_half_extents: tuple[float, float, float],
        slab_bottom: float,
        crawl_gap: float,
        floor_half_size: float,
        **kwargs,
    ):
        self.walk_forward_weight = float(walk_forward_weight)
        self.crawl_forward_weight = float(crawl_forward_weight)
        self.ctrl_cost_weight = float(ctrl_cost_weight)
        self.contact_cost_weight = float(contact_cost_weight)
        self.contact_cost_max = float(contact_cost_max)
        self.healthy_reward = float(healthy_reward)
        self.healthy_z_range = (float(healthy_z_range[0]), float(healthy_z_range[1]))
        self.terminate_when_unhealthy = bool(terminate_when_unhealthy)
        self.reset_noise_scale = float(reset_noise_scale)
        self.slab_half_extents = tuple(float(h) for h in slab_half_extents)
        self.slab_bottom = float(slab_bottom)
        self.crawl_gap = float(crawl_gap)
        self._floor_half_size = float(floor_half_size)
        if len(self.slab_half_extents) != 3 or min(self.slab_half_extents) <= 0:
            raise ValueError(f"slab_half_extents must be three positive numbers, got {slab_half_extents!r}")

        MujocoEnv.__init__(self, str(HUMANOID_XML), frame_skip, observation_space=None,
                           default_camera_config=default_camera_config, **kwargs)
        self.metadata = {**self.metadata, "render_fps": int(np.round(1.0 / self.dt))}

        self._slab_body = self.model.body("slab").id
        self._slab_mocap = int(self.model.body_mocapid[self._slab_body])
        self._bodies = slice(1, self._slab_body)  # the humanoid's bodies (world is 0, the slab is last)
        mass = self.model.body_mass[self._bodies]
        self._mass_weights = mass / mass.sum()
        self._displacement_scale = 1.0 / self.model.opt.timestep  # the original's Δx / 0.003
        n_bodies = self._slab_body - 1
        self.observation_structure = {"skipped_qpos": 2, "qpos": self.model.nq - 2, "qvel": self.model.nv,
                                      "cinert": 10 * n_bodies, "cvel": 6 * n_bodies,
                                      "qfrc_actuator": self.model.nv - 6, "cfrc_ext": 6 * n_bodies}
        obs_size = sum(self.observation_structure.values()) - 2
        self.observation_space = Box(-np.inf, np.inf, shape=(obs_size,), dtype=np.float64)
        self.task = self._default_task
        self._episode_task = self._default_task
        self.mode = WALK  # the reward's task in the course (walk until the switch point); unused by Walk/Crawl

    def _initialize_simulation(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        model = build_model(self.slab_half_extents, self._floor_half_size)
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        return model, mujoco.MjData(model)

    def _step_mujoco_simulation(self, ctrl, n_frames) -> None:
        # As MujocoEnv, minus the mj_rnePostConstraint after the step: the step computes cfrc_ext (module doc).
        self.data.ctrl[:] = ctrl
        mujoco.mj_step(self.model, self.data, nstep=n_frames)

    # -- task API -------------------------------------------------------------------------------------------
    @classmethod
    def sample_task(cls, rng: np.random.Generator) -> int:
        """A task drawn uniformly with the caller's RNG."""
        return int(rng.integers(cls.n_tasks))

    def _task_error(self, task: Any) -> ValueError:
        allowed = " or ".join(str(t) for t in range(self.n_tasks))
        return ValueError(f"{type(self).__name__} task must be {allowed}, got {task!r}")

    def check_task(self, task: Any) -> int:
        """``task`` as an int, or a ValueError naming the tasks there are."""
        try:
            value = int(task)
        except (TypeError, ValueError):
            raise self._task_error(task) from None
        if value != task or value not in range(self.n_tasks):
            raise self._task_error(task)
        return value

    def set_task(self, task: int) -> None:
        """Select the task for the episodes that start from the next reset on."""
        self.task = self.check_task(task)

    # -- geometry -------------------------------------------------------------------------------------------
    def slab_x_range(self, start: float, direction: int = 1) -> tuple[float, float]:
        """The x-range of a slab whose near edge is ``crawl_gap`` beyond ``start`` in ``direction``."""
        near = start + direction * self.crawl_gap
        far = near + direction * 2 * self.slab_half_extents[0]
        return (min(near, far), max(near, far))

    def _slab_centre(self, x_range: tuple[float, float], y: float) -> tuple[float, float, float]:
        return (0.5 * (x_range[0] + x_range[1]), y, self.slab_bottom + self.slab_half_extents[2])

    # -- dynamics, on rows of envs (one row here, many in envs.batch.MujocoBatchVecEnv) ---------------------------
    def _com_x(self) -> float:
        return float(self._com_x_rows(self.data.xipos[None])[0])

    def _com_x_rows(self, xipos: np.ndarray) -> np.ndarray:
        return np.sum(self._mass_weights * xipos[:, self._bodies, 0], axis=1)

    def _get_obs(self) -> np.ndarray:
        d = self.data
        return self._obs_rows(d.qpos[None], d.qvel[None], d.cinert[None], d.cvel[None], d.qfrc_actuator[None],
                              d.cfrc_ext[None])[0]

    def _obs_rows(self, qpos, qvel, cinert, cvel, qfrc_actuator, cfrc_ext) -> np.ndarray:
        b, n = self._bodies, len(qpos)
        return np.concatenate((qpos[:, 2:], qvel, cinert[:, b].reshape(n, -1), cvel[:, b].reshape(n, -1),
                               qfrc_actuator[:, 6:], cfrc_ext[:, b].reshape(n, -1)), axis=1)

    def _reward_rows(self, task, velocity, qpos, ctrl, cfrc_ext):
        """Rewards, terminations and reward terms of ``task`` per env, for a step whose CoM moved ``velocity``
        (Δx / timestep)."""
        n = len(task)
        ctrl_cost = self.ctrl_cost_weight * np.sum(np.square(ctrl), axis=1)
        contact = np.sum(np.square(cfrc_ext[:, self._bodies]).reshape(n, -1), axis=1)
        contact_cost = np.minimum(self.contact_cost_weight * contact, self.contact_cost_max)
        lo, hi = self.healthy_z_range
        walk, healthy = task == WALK, (lo < qpos[:, 2]) & (qpos[:, 2] < hi)
        survive = np.where(walk & healthy, self.healthy_reward, 0.0)
        forward = np.where(walk, np.where(healthy, self.walk_forward_weight * velocity, 0.0),
                           self.crawl_forward_weight * self._crawl_sign * velocity)
        terminated = walk & ~healthy & self.terminate_when_unhealthy
        terms = {"reward_forward": forward, "reward_survive": survive, "reward_ctrl": -ctrl_cost,
                 "reward_contact": -contact_cost}
        return forward + survive - ctrl_cost - contact_cost, terminated, terms

    def step(self, action):
        """One env's step through the row methods that ``batch_step`` runs on many: the task (Walk/Crawl) or the
        mode (the course) decides the reward."""
        x_before = self._com_x()
        self.do_simulation(action, self.frame_skip)
        displacement = self._com_x() - x_before
        d, rows = self.data, {"task": np.array([self._episode_task]), "mode": np.array([self.mode])}
        mode = self._mode_rows(rows, d.qpos[None])
        self.mode = int(rows["mode"][0])
        rewards, terminated, terms = self._reward_rows(mode, np.array([displacement * self._displacement_scale]),
                                                       d.qpos[None], d.ctrl[None], d.cfrc_ext[None])
        terms.update(self._step_info_rows(rows, d.qpos[None], np.array([displacement])))
        info = {key: value[0].item() for key, value in terms.items()}
        if self.render_mode == "human":
            self.render()
        return self._get_obs(), float(rewards[0]), bool(terminated[0]), False, info

    def _reset_state(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        noise = self.reset_noise_scale
        qpos = self.init_qpos + rng.uniform(-noise, noise, size=self.model.nq)
        qvel = self.init_qvel + rng.uniform(-noise, noise, size=self.model.nv)
        return qpos, qvel

    # -- many envs in one mujoco.batch.Batch (envs.batch.MujocoBatchVecEnv) ------------------------------------
    batch_outputs = ("xipos", "cinert", "cvel", "qfrc_actuator", "cfrc_ext")

    def batch_vars(self, n: int) -> dict[str, np.ndarray]:
        # the CoM x after the last step or reset (the next step's "before"); the course's mode
        return {"com_x": np.zeros(n), "mode": np.full(n, WALK, dtype=np.int64)}

    def _obs_of(self, venv, ids=slice(None)) -> np.ndarray:
        o = venv.outputs
        return self._obs_rows(venv.qpos[ids], venv.qvel[ids], o["cinert"][ids], o["cvel"][ids],
                              o["qfrc_actuator"][ids], o["cfrc_ext"][ids])

    def batch_reset(self, venv, ids: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """As ``reset`` for the envs ``ids``, whose simulations were just reset to the model's defaults."""
        task = venv.vars["next_task"][ids]
        venv.vars["task"][ids] = task
        venv.vars["mode"][ids] = WALK
        for i, k in zip(ids, task, strict=True):
            venv.mocap_pos[i, self._slab_mocap] = self._slab_centre_for(int(k))
            venv.qpos[i], venv.qvel[i] = self._reset_state(venv.rngs[i])
        venv.sim.forward(ids)
        venv.vars["com_x"][ids] = self._com_x_rows(venv.outputs["xipos"][ids])
        infos = [self._reset_info_of(int(k), WALK, float(venv.qpos[i, 0])) for i, k in zip(ids, task, strict=True)]
        return self._obs_of(venv, ids), infos

    def batch_step(self, venv, actions: np.ndarray):
        """As ``step`` for every env of ``venv``: (observations, rewards, terminated, info columns)."""
        x_before = venv.vars["com_x"].copy()
        venv.ctrl[:] = actions
        venv.sim.step(nstep=self.frame_skip)
        x_after = self._com_x_rows(venv.outputs["xipos"])
        venv.vars["com_x"][:] = x_after
        displacement = x_after - x_before
        mode = self._mode_rows(venv.vars, venv.qpos)
        rewards, terminated, info = self._reward_rows(mode, displacement * self._displacement_scale, venv.qpos,
                                                      venv.ctrl, venv.outputs["cfrc_ext"])
        info.update(self._step_info_rows(venv.vars, venv.qpos, displacement))
        return self._obs_of(venv), rewards, terminated, info

    def _slab_centre_for(self, task: int) -> tuple[float, float, float]:
        raise NotImplementedError

    def _reset_info_of(self, task: int, mode: int, x: float) -> dict[str, Any]:
        raise NotImplementedError

    def _mode_rows(self, rows: dict[str, np.ndarray], qpos: np.ndarray) -> np.ndarray:
        """The reward's task of each env for this step (and the course's mode update)."""
        raise NotImplementedError

    def _step_info_rows(self, rows, qpos, displacement) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _place_for_episode(self) -> None:
        raise NotImplementedError

    def reset_model(self) -> np.ndarray:
        self._place_for_episode()
        self.set_state(*self._reset_state(self.np_random))
        return self._get_obs()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if options and "task" in options:
            self.set_task(options["task"])
        self._episode_task = self.task
        return super().reset(seed=seed, options=options)


class HumanoidWalkCrawlEnv(_HumanoidSlabEnv):
    """The paper's Walk/Crawl distribution: task 0 crawls under the slab, task 1 walks with the slab away."""

    n_tasks = 2
    _default_task = WALK  # until a task is set, the env is Humanoid-v5 (same physics and observations)

    def __init__(
        self,
        frame_skip: int = 5,
        default_camera_config: dict[str, Any] = DEFAULT_CAMERA_CONFIG,
        walk_forward_weight: float = 0.25,
        crawl_forward_weight: float = 1.5,
        crawl_direction: int = 1,
        ctrl_cost_weight: float = 0.1,
        contact_cost_weight: float = 5e-7,
        contact_cost_max: float = 10.0,
        healthy_reward: float = 5.0,
        healthy_z_range: tuple[float, float] = (1.0, float("inf")),
        terminate_when_unhealthy: bool = True,
        reset_noise_scale: float = 1e-2,
        slab_half_extents: tuple[float, float, float] = (11.5, 11.5, 0.5),
        slab_bottom: float = 1.0,
        crawl_gap: float = 0.5,
        slab_away_y: float = 30.0,
        floor_half_size: float = 60.0,
        **kwargs,
    ):
        utils.EzPickle.__init__(
            self, frame_skip, default_camera_config, walk_forward_weight, crawl_forward_weight, crawl_direction,
            ctrl_cost_weight, contact_cost_weight, contact_cost_max, healthy_reward, healthy_z_range,
            terminate_when_unhealthy, reset_noise_scale, slab_half_extents, slab_bottom, crawl_gap, slab_away_y,
            floor_half_size, **kwargs,
        )
        if crawl_direction not in (1, -1):
            raise ValueError(f"crawl_direction must be 1 (forward, +x) or -1 (backward, the original), "
                             f"got {crawl_direction!r}")
        self.crawl_direction = int(crawl_direction)
        self._crawl_sign = self.crawl_direction
        self.slab_away_y = float(slab_away_y)
        super().__init__(frame_skip, default_camera_config, walk_forward_weight, crawl_forward_weight,
                         ctrl_cost_weight, contact_cost_weight, contact_cost_max, healthy_reward, healthy_z_range,
                         terminate_when_unhealthy, reset_noise_scale, slab_half_extents, slab_bottom, crawl_gap,
                         floor_half_size, **kwargs)

    @property
    def slab_x(self) -> tuple[float, float]:
        """The slab's x-range (the same in both tasks; the walk task moves it sideways)."""
        return self.slab_x_range(0.0, self.crawl_direction)

    def _slab_centre_for(self, task: int) -> tuple[float, float, float]:
        return self._slab_centre(self.slab_x, 0.0 if task == CRAWL else self.slab_away_y)

    def _place_for_episode(self) -> None:
        self.data.mocap_pos[self._slab_mocap] = self._slab_centre_for(self._episode_task)

    def _reset_info_of(self, task: int, mode: int, x: float) -> dict[str, Any]:
        return {"task": task, "x_position": x}

    def _mode_rows(self, rows, qpos):
        return rows["task"]

    def _step_info_rows(self, rows, qpos, displacement):
        return {"task": rows["task"].copy(), "x_position": qpos[:, 0].copy(), "x_velocity": displacement / self.dt}

    def _get_reset_info(self) -> dict[str, Any]:
        return self._reset_info_of(self._episode_task, WALK, float(self.data.qpos[0]))


class HumanoidCourseEnv(_HumanoidSlabEnv):
    """The paper's Walk/Crawl combination: walk +x, then crawl +x under the slab once past ``course_switch_x``.

    There is one task (0); ``info["mode"]`` is ``WALK`` (1) until the root passes ``course_switch_x`` and
    ``CRAWL`` (0) for the rest of the episode, with the Walk/Crawl task of the same number's reward.
    """

    n_tasks = 1

    def __init__(
        self,
        frame_skip: int = 5,
        default_camera_config: dict[str, Any] = DEFAULT_CAMERA_CONFIG,
        walk_forward_weight: float = 0.25,
        crawl_forward_weight: float = 1.5,
        ctrl_cost_weight: float = 0.1,
        contact_cost_weight: float = 5e-7,
        contact_cost_max: float = 10.0,
        healthy_reward: float = 5.0,
        healthy_z_range: tuple[float, float] = (1.0, float("inf")),
        terminate_when_unhealthy: bool = True,
        reset_noise_scale: float = 1e-2,
        slab_half_extents: tuple[float, float, float] = (11.5, 11.5, 0.5),
        slab_bottom: float = 1.0,
        crawl_gap: float = 0.5,
        course_switch_x: float = 25.0,
        floor_half_size: float = 60.0,
        **kwargs,
    ):
        utils.EzPickle.__init__(
            self, frame_skip, default_camera_config, walk_forward_weight, crawl_forward_weight, ctrl_cost_weight,
            contact_cost_weight, contact_cost_max, healthy_reward, healthy_z_range, terminate_when_unhealthy,
            reset_noise_scale, slab_half_extents, slab_bottom, crawl_gap, course_switch_x, floor_half_size,
            **kwargs,
        )
        self.course_switch_x = float(course_switch_x)
        self.mode = WALK
        super().__init__(frame_skip, default_camera_config, walk_forward_weight, crawl_forward_weight,
                         ctrl_cost_weight, contact_cost_weight, contact_cost_max, healthy_reward, healthy_z_range,
                         terminate_when_unhealthy, reset_noise_scale, slab_half_extents, slab_bottom, crawl_gap,
                         floor_half_size, **kwargs)

    @property
    def slab_x(self) -> tuple[float, float]:
        """The slab's x-range: from ``crawl_gap`` past the switch point, ``2 * slab_half_extents[0]`` long."""
        return self.slab_x_range(self.course_switch_x, 1)

    def _slab_centre_for(self, task: int) -> tuple[float, float, float]:
        return self._slab_centre(self.slab_x, 0.0)

    def _place_for_episode(self) -> None:
        self.mode = WALK
        self.data.mocap_pos[self._slab_mocap] = self._slab_centre_for(self._episode_task)

    def _reset_info_of(self, task: int, mode: int, x: float) -> dict[str, Any]:
        return {"task": task, "mode": mode, "x_position": x}

    def _mode_rows(self, rows, qpos):
        mode = rows["mode"]
        mode[(mode == WALK) & (qpos[:, 0] > self.course_switch_x)] = CRAWL
        return mode

    def _step_info_rows(self, rows, qpos, displacement):
        return {"task": rows["task"].copy(), "mode": rows["mode"].copy(), "x_position": qpos[:, 0].copy(),
                "x_velocity": displacement / self.dt}

    def _get_reset_info(self) -> dict[str, Any]:
        return self._reset_info_of(self._episode_task, self.mode, float(self.data.qpos[0]))
