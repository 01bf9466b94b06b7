"""k robosuite-based environments in one process behind the batched env contract (shared by LIBERO).

`RobosuiteBaseEnv` holds k "slots", each one robosuite environment object (a robosuite ``Lift``, a LIBERO
``OffScreenRenderEnv``, ...) for its current task, stepped one after another, with its own off-screen
renderer. Subclasses say how to build a task's environment, where initial states come from and how an
episode starts; this class does the contract: reset options, action validation, episode bookkeeping, the
two autoreset modes, observations.

Observation (LeRobot keys):

- ``observation.state`` float32 ``[k, 8]``: end-effector position (3), end-effector orientation as an
  axis-angle computed as robosuite's ``quat2axisangle`` does (3; angle in [0, 2 pi), no sign
  canonicalization), gripper finger joint positions (2): the LeRobot / OpenVLA-OFT LIBERO state.
- ``observation.images.agentview`` (robosuite's ``agentview`` camera) and ``observation.images.wrist``
  (``robot0_eye_in_hand``), uint8 ``[k, image_size, image_size, 3]``: rendered at ``render_size``,
  oriented by the subclass (`RobosuiteBaseEnv.orient`), resized to ``image_size`` (area interpolation)
  when the two differ.
- ``task``: the instruction.

Action: float ``[k, 7]`` in [-1, 1] for robosuite's OSC_POSE controller: delta end-effector position (3,
scaled by the controller to 5 cm) and rotation (3, to 0.5 rad), gripper (-1 open, +1 close).

Rendering: robosuite's own camera observations are off (``use_camera_obs=False``); one
``mujoco.Renderer`` per environment renders only the cameras asked for, collision geoms hidden as robosuite
hides them. ``fast_render=True`` (default) turns multisampling (``offsamples = 0``), reflections and
shadows off: on a 2-core machine's software EGL a 256 px LIBERO frame then costs ~90 ms instead of ~310 ms.
Physics and success do not depend on it. ``fast_render=False`` renders as robosuite does (a LIBERO frame is
then bit-identical to LIBERO's own ``agentview_image``, checked by hand).
"""

from __future__ import annotations

import abc
import functools
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import batch_space

from sim.core import (
    OBS_STATE,
    TASK,
    AutoresetMode,
    BatchedEnv,
    InitStateSplit,
    TaskSpec,
    check_seed,
    image_key,
    parse_reset_options,
    validate_actions,
)
from sim.vector import ProcessVectorEnv

__all__ = ["CAMERAS", "RobosuiteBaseEnv", "SuiteWorkers", "robosuite_axis_angle", "set_gl_defaults"]

CAMERAS = {"agentview": "agentview", "wrist": "robot0_eye_in_hand"}
"""Our camera name -> robosuite's camera name."""
ACTION_DIM = 7
STATE_DIM = 8
CONTROL_HZ = 20
INSTRUCTION_CHARSET = "abcdefghijklmnopqrstuvwxyz0123456789 ,.'-"
_STATE_LOW = np.array([-2, -2, -1, -2 * np.pi, -2 * np.pi, -2 * np.pi, -0.1, -0.1], np.float32)
_STATE_HIGH = np.array([2, 2, 3, 2 * np.pi, 2 * np.pi, 2 * np.pi, 0.1, 0.1], np.float32)


def robosuite_axis_angle(quat_xyzw: np.ndarray) -> np.ndarray:
    """Quaternion ``[4]`` (x, y, z, w) -> axis-angle ``[3]`` with robosuite's convention.

    angle = 2 acos(w) (w clipped to [-1, 1]), axis = (x, y, z) / sqrt(1 - w^2); zero when that is ~0. The
    sign of the quaternion is not canonicalized, so this matches the state in LIBERO datasets exactly.
    """
    w = float(np.clip(quat_xyzw[3], -1.0, 1.0))
    denominator = np.sqrt(1.0 - w * w)
    if np.isclose(denominator, 0.0):
        return np.zeros(3)
    return np.asarray(quat_xyzw[:3], np.float64) * 2.0 * np.arccos(w) / denominator


def set_gl_defaults() -> None:
    """Off-screen rendering needs ``MUJOCO_GL``; default to EGL (software EGL works without a GPU)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])


@dataclass
class Slot:
    """One environment: its task, the robosuite env object, its renderer and episode bookkeeping."""

    task: str
    env: Any = None  # built at the first reset that needs it
    renderer: Any = None  # one mujoco.Renderer (one GL context) for all cameras of this env
    offsamples: int = 4  # the model's own multisampling, restored when fast_render is turned off
    steps: int = 0
    done: bool = False
    ended_by_success: bool = False
    init_state_id: int = 0
    raw: dict[str, Any] = field(default_factory=dict)


class RobosuiteBaseEnv(BatchedEnv, abc.ABC):
    """k robosuite-based environments in this process (see the module docstring).

    Args:
        task_specs: every task this env can run, by name (in task-id order).
        num_envs: k.
        tasks: task names, assigned to the envs round-robin (default: all, in order). Environments are
            built at the first ``reset``; one whose task changes at a ``reset`` is rebuilt (seconds), so
            keep environments on one task for many episodes (evaluation does).
        cameras: cameras rendered into observations (``agentview``, ``wrist``); empty for none.
        image_size: side of the returned square images (px).
        render_size: side of the rendered images before resizing.
        fast_render: multisampling, reflections and shadows off.
        autoreset_mode: ``SameStep`` or ``Disabled`` (see `sim.core`).

    """

    CAMERA_NAMES: ClassVar[tuple[str, ...]] = tuple(CAMERAS)
    HAS_SCRIPTED_EXPERT: ClassVar[bool] = False

    def __init__(
        self,
        task_specs: dict[str, TaskSpec],
        num_envs: int,
        tasks: Sequence[str] | None,
        cameras: Sequence[str],
        image_size: int,
        render_size: int,
        fast_render: bool,
        autoreset_mode: AutoresetMode | str,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        known = tuple(task_specs)
        task_list = tuple(tasks) if tasks else known
        unknown = sorted(set(task_list) - set(known))
        if unknown:
            raise ValueError(f"unknown {self._family()} task(s) {unknown}; known tasks: {', '.join(known)}")
        unknown_cameras = sorted(set(cameras) - set(CAMERAS))
        if unknown_cameras:
            raise ValueError(f"unknown camera(s) {unknown_cameras}; the scenes have {', '.join(CAMERAS)}")
        for name, size in (("image_size", image_size), ("render_size", render_size)):
            if not 16 <= size <= 1024:
                raise ValueError(f"{name} must be within [16, 1024] pixels, got {size}")
        mode = AutoresetMode(autoreset_mode)
        if mode not in (AutoresetMode.SAME_STEP, AutoresetMode.DISABLED):
            raise ValueError(f"autoreset_mode must be 'SameStep' or 'Disabled', got {autoreset_mode!r}")

        self.num_envs = num_envs
        self.task_specs = dict(task_specs)
        self.cameras = tuple(cameras)
        self.image_size = image_size
        self.render_size = render_size
        self.fast_render = fast_render
        self.metadata = {"autoreset_mode": mode, "render_fps": CONTROL_HZ}
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        observation_spaces: dict[str, gym.Space[Any]] = {
            OBS_STATE: gym.spaces.Box(_STATE_LOW, _STATE_HIGH, (STATE_DIM,), np.float32),
            TASK: gym.spaces.Text(max_length=200, charset=INSTRUCTION_CHARSET),
        }
        for camera in self.cameras:
            observation_spaces[image_key(camera)] = gym.spaces.Box(
                0, 255, (image_size, image_size, 3), np.uint8
            )
        self.single_observation_space = gym.spaces.Dict(observation_spaces)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)

        self._task_index = {name: index for index, name in enumerate(known)}
        self._split = InitStateSplit.TRAIN
        self._rng = np.random.default_rng()
        self._closed = False
        self._slots = [Slot(task=task_list[index % len(task_list)]) for index in range(num_envs)]
        self._frames = {
            camera: np.zeros((num_envs, image_size, image_size, 3), np.uint8) for camera in self.cameras
        }
        self._state = np.zeros((num_envs, STATE_DIM), np.float32)

    # ------------------------------------------------------------------------------------------------
    # What subclasses provide

    @abc.abstractmethod
    def make_sim_env(self, task: str) -> Any:
        """Build the robosuite environment object of ``task`` (camera observations off, soft resets)."""

    @abc.abstractmethod
    def initial_state(self, slot: Slot, split: InitStateSplit, state_id: int) -> np.ndarray:
        """The flattened MuJoCo state ``[S]`` that initial state ``state_id`` of ``split`` starts from."""

    def start_episode(self, slot: Slot, state: np.ndarray) -> dict[str, Any]:
        """Put ``slot``'s env in ``state`` for a new episode; return robosuite's observation dict."""
        env = slot.env
        env.reset()
        self.clear_gripper(slot)
        env.sim.set_state_from_flattened(state)
        env.sim.forward()
        observations: dict[str, Any] = env._get_observations(force_update=True)
        return observations

    def step_sim_env(self, slot: Slot, action: np.ndarray) -> tuple[dict[str, Any], bool]:
        """Step ``slot``'s env once; return (robosuite's observation dict, task solved)."""
        raw, _, _, _ = slot.env.step(action)
        return raw, bool(slot.env._check_success())

    def orient(self, frame: np.ndarray) -> np.ndarray:
        """Turn an upright rendered frame ``[R, R, 3]`` into the observed one (identity here)."""
        return frame

    def _family(self) -> str:
        return "robosuite"

    # ------------------------------------------------------------------------------------------------
    # Contract

    @property
    def tasks(self) -> tuple[str, ...]:
        """The task each environment is running."""
        return tuple(slot.task for slot in self._slots)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Reset all k envs; ``options`` as in `sim.core` (split, tasks, init_state_ids).

        Returns ``(obs, info)``: obs as in the module docstring, ``info`` with ``success`` (bool ``[k]``),
        ``task_id`` and ``init_state_id`` (int ``[k]``).
        """
        self._check_open()
        checked_seed = check_seed(seed)
        request = parse_reset_options(options, self.num_envs, tuple(self.task_specs))
        if checked_seed is not None:
            self._rng = np.random.default_rng(checked_seed)
        tasks = request.tasks if request.tasks is not None else self.tasks
        if request.init_state_ids is not None:
            for index, state_id in enumerate(request.init_state_ids):
                limit = self.task_specs[tasks[index]].num_states(request.split)
                if state_id >= limit:
                    raise ValueError(
                        f"init_state_ids[{index}] = {state_id} is out of range: task {tasks[index]!r} "
                        f"has {limit} {request.split} initial states"
                    )
        self._split = request.split
        for index, task in enumerate(tasks):
            slot = self._slots[index]
            if slot.env is None or slot.task != task:
                self._release(slot)
                self._slots[index] = self._build_slot(task)
            state_id = (
                int(request.init_state_ids[index])
                if request.init_state_ids is not None
                else self._draw_state_id(task)
            )
            self._reset_slot(index, state_id)
        return self._observe(range(self.num_envs)), self._info(np.zeros(self.num_envs, bool))

    def step(self, actions: Any) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Advance every env one control step with ``actions`` ``[k, 7]``; see `sim.core`."""
        self._check_open()
        if any(slot.env is None or not slot.raw for slot in self._slots):
            raise RuntimeError("call reset() before step()")
        clipped, clipped_mask = validate_actions(actions, self.num_envs, ACTION_DIM)
        active = np.array([not slot.done for slot in self._slots])
        success = np.zeros(self.num_envs, bool)
        for index in np.flatnonzero(active):
            slot = self._slots[index]
            slot.raw, success[index] = self.step_sim_env(slot, clipped[index])
            slot.steps += 1
        max_steps = np.array([self.task_specs[slot.task].max_steps for slot in self._slots])
        steps = np.array([slot.steps for slot in self._slots])
        terminated = success & active
        truncated = active & ~success & (steps >= max_steps)
        reward = terminated.astype(np.float64)
        stepped = np.flatnonzero(active)
        if self.metadata["autoreset_mode"] is AutoresetMode.DISABLED:
            ended = np.array([slot.done and slot.ended_by_success for slot in self._slots])
            was_done = ~active
            terminated |= was_done & ended
            truncated |= was_done & ~ended
            for index in stepped:
                slot = self._slots[index]
                slot.ended_by_success = bool(terminated[index])
                slot.done = bool(terminated[index] or truncated[index])
            info = self._info(success | (was_done & ended))
            info["action_clipped"] = clipped_mask
            return self._observe(stepped), reward, terminated, truncated, info

        obs = self._observe(stepped)
        info = self._info(success)
        info["action_clipped"] = clipped_mask
        finished = np.flatnonzero(terminated | truncated)
        if len(finished):
            info["final_obs"] = {
                key: (value.copy() if isinstance(value, np.ndarray) else value) for key, value in obs.items()
            }
            info["_final_obs"] = terminated | truncated
            info["final_success"] = success.copy()
            for index in finished:
                self._reset_slot(int(index), self._draw_state_id(self._slots[index].task))
            info.update(self._info(success))
            info["action_clipped"] = clipped_mask
            obs = self._observe(finished)
        return obs, reward, terminated, truncated, info

    def expert_action(self) -> np.ndarray:
        """Not available: these tasks have no scripted experts here."""
        raise NotImplementedError(
            f"{self._family()} tasks have no scripted expert; evaluate a policy (policy.path=...)"
        )

    def close(self, **kwargs: Any) -> None:
        """Close every environment and renderer (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for slot in self._slots:
            self._release(slot)

    def set_fast_render(self, fast_render: bool) -> None:
        """Switch the render settings; renderers are recreated, episodes go on."""
        self.fast_render = fast_render
        for slot in self._slots:
            self._make_renderer(slot)

    def render_raw(self, index: int, camera: str) -> np.ndarray:
        """Env ``index``'s ``camera`` frame as robosuite returns it (OpenGL row order), uint8 ``[R, R, 3]``.

        Rendered at ``render_size`` with this env's render settings; for tests and debugging.
        """
        return np.ascontiguousarray(self._render(self._slots[index], camera)[::-1])

    @property
    def sim_envs(self) -> tuple[Any, ...]:
        """The built robosuite environment objects (privileged access, e.g. for scripted controllers)."""
        return tuple(slot.env for slot in self._slots if slot.env is not None)

    # ------------------------------------------------------------------------------------------------
    # Internals

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the environment is closed")

    def _draw_state_id(self, task: str) -> int:
        return int(self._rng.integers(self.task_specs[task].num_states(self._split)))

    def _build_slot(self, task: str) -> Slot:
        set_gl_defaults()
        env = self.make_sim_env(task)
        model = env.sim.model._model
        model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), self.render_size)
        model.vis.global_.offheight = max(int(model.vis.global_.offheight), self.render_size)
        slot = Slot(task=task, env=env, offsamples=int(model.vis.quality.offsamples))
        self._make_renderer(slot)
        return slot

    def _make_renderer(self, slot: Slot) -> None:
        """(Re)create the slot's renderer with the current render settings (none without cameras)."""
        import mujoco

        if slot.renderer is not None:
            slot.renderer.close()
            slot.renderer = None
        if not self.cameras or slot.env is None:
            return
        model = slot.env.sim.model._model
        model.vis.quality.offsamples = 0 if self.fast_render else slot.offsamples  # read at context creation
        slot.renderer = mujoco.Renderer(model, self.render_size, self.render_size)

    def _release(self, slot: Slot) -> None:
        """Close a slot's renderer and environment (if built)."""
        if slot.renderer is not None:
            slot.renderer.close()
            slot.renderer = None
        if slot.env is not None:
            slot.env.close()
            slot.env = None
        slot.raw = {}

    @staticmethod
    def clear_gripper(slot: Slot) -> None:
        """Zero the robots' gripper command state.

        robosuite rate-limits the gripper command and keeps it between episodes; a hard reset rebuilds the
        gripper (state zero), a soft reset must clear it, or an episode depends on the one before.
        """
        for robot in slot.env.robots:
            robot.gripper.current_action = np.zeros_like(robot.gripper.current_action)

    def _reset_slot(self, index: int, state_id: int) -> None:
        slot = self._slots[index]
        state = self.initial_state(slot, self._split, state_id)
        slot.raw = self.start_episode(slot, state)
        slot.steps = 0
        slot.done = False
        slot.ended_by_success = False
        slot.init_state_id = state_id

    def _render(self, slot: Slot, camera: str) -> np.ndarray:
        """Render ``camera`` upright (MuJoCo's Renderer flips OpenGL's bottom-up rows), ``[R, R, 3]``."""
        import mujoco

        renderer = slot.renderer
        option = mujoco.MjvOption()
        option.geomgroup[0] = 0  # collision geoms hidden, as robosuite renders
        renderer.update_scene(slot.env.sim.data._data, camera=CAMERAS[camera], scene_option=option)
        if self.fast_render:
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        frame: np.ndarray = renderer.render()
        return frame

    def _observe(self, changed: Iterable[int]) -> dict[str, Any]:
        """The batched observation; only the envs in ``changed`` are read and rendered again."""
        for index in changed:
            slot = self._slots[index]
            raw = slot.raw
            self._state[index] = np.concatenate(
                [
                    raw["robot0_eef_pos"],
                    robosuite_axis_angle(raw["robot0_eef_quat"]),
                    raw["robot0_gripper_qpos"],
                ]
            )
            for camera in self.cameras:
                frame = self.orient(self._render(slot, camera))
                if self.image_size != self.render_size:
                    frame = _resize(frame, self.image_size)
                self._frames[camera][index] = frame
        obs: dict[str, Any] = {OBS_STATE: self._state.copy()}
        for camera in self.cameras:
            obs[image_key(camera)] = self._frames[camera].copy()
        obs[TASK] = tuple(self.task_specs[slot.task].instruction for slot in self._slots)
        return obs

    def _info(self, success: np.ndarray) -> dict[str, Any]:
        return {
            "success": success,
            "task_id": np.array([self._task_index[slot.task] for slot in self._slots], np.int64),
            "init_state_id": np.array([slot.init_state_id for slot in self._slots], np.int64),
        }


def _resize(frame: np.ndarray, size: int) -> np.ndarray:
    import cv2

    resized: np.ndarray = cv2.resize(np.ascontiguousarray(frame), (size, size), interpolation=cv2.INTER_AREA)
    return resized


class SuiteWorkers(ProcessVectorEnv):
    """N environments of one suite in W worker processes; the first ``reset`` assigns the tasks round-robin.

    Subclasses declare ``TASK_NAMES`` and pass the factory of one worker's env (it receives ``num_envs``,
    ``tasks`` and the camera/render/autoreset keywords given here). ``step_timeout_s`` defaults to
    ``BASE_TIMEOUT_S + PER_ENV_TIMEOUT_S * k`` for k environments per worker, since a ``reset`` may build
    every one of them.
    """

    BASE_TIMEOUT_S: ClassVar[float] = 60.0
    PER_ENV_TIMEOUT_S: ClassVar[float] = 30.0

    def __init__(
        self,
        worker_env: Callable[..., BatchedEnv],
        num_envs: int,
        tasks: Sequence[str] | None,
        num_workers: int | None,
        step_timeout_s: float | None,
        suite: str,
        *,
        cameras: Sequence[str],
        image_size: int,
        render_size: int | None,
        fast_render: bool,
        autoreset_mode: AutoresetMode | str,
        start_timeout_s: float = 300.0,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        workers = num_workers if num_workers is not None else min(num_envs, os.cpu_count() or 1)
        if workers < 1 or num_envs % workers:
            raise ValueError(f"num_workers ({workers}) must be positive and divide num_envs ({num_envs})")
        task_list = tuple(tasks) if tasks else self.TASK_NAMES
        unknown = sorted(set(task_list) - set(self.TASK_NAMES))
        if unknown:
            raise ValueError(f"unknown {suite} task(s) {unknown}; known tasks: {', '.join(self.TASK_NAMES)}")
        self._initial_tasks: tuple[str, ...] | None = tuple(
            task_list[index % len(task_list)] for index in range(num_envs)
        )
        per_worker = num_envs // workers
        set_gl_defaults()  # spawned workers inherit the environment
        timeout = (
            step_timeout_s
            if step_timeout_s is not None
            else self.BASE_TIMEOUT_S + self.PER_ENV_TIMEOUT_S * per_worker
        )
        factory = functools.partial(
            worker_env,
            num_envs=per_worker,
            tasks=task_list,
            cameras=tuple(cameras),
            image_size=image_size,
            render_size=render_size,
            fast_render=fast_render,
            autoreset_mode=AutoresetMode(autoreset_mode),
        )
        super().__init__(factory, workers, step_timeout_s=timeout, start_timeout_s=start_timeout_s)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Reset all N envs (see `ProcessVectorEnv.reset`); the first reset assigns the configured tasks."""
        if self._initial_tasks is not None:
            options = dict(options or {})
            options.setdefault("tasks", list(self._initial_tasks))
            self._initial_tasks = None
        return super().reset(seed=seed, options=options)
