"""In-process batched MuJoCo stepping and rendering, shared by our MuJoCo suites (arm, car, drone).

`BatchedSimulator` steps N copies of one model in parallel with MuJoCo's own thread pool
(`mujoco.rollout.Rollout`, which releases the GIL), so cheap environments use every core without
inter-process traffic. Each environment has its own `MjModel` copy, so per-episode model parameters
(colours, positions of static fixtures) can differ between environments while the state layout stays
the same. `BatchedRenderer` renders any environment's cameras off-screen, in this process or in worker
processes over shared memory. `MujocoBatchedEnv` is the `sim.core` batched-env contract on top of both
(reset, step, autoreset, observations), which each suite completes with its scene, controls, success
checks and experts.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import copy
import multiprocessing
import os
import string
import weakref
from collections.abc import Sequence
from multiprocessing import shared_memory
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, ClassVar

import gymnasium as gym
import mujoco
import mujoco.rollout
import numpy as np
from gymnasium.vector.utils import batch_space

from sim.core import (
    OBS_ENV_STATE,
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

STATE_SPEC = mujoco.mjtState.mjSTATE_FULLPHYSICS
RENDER_START_TIMEOUT_S = 120.0
RENDER_TIMEOUT_S = 60.0


class BatchedSimulator:
    """N environments of one MuJoCo model, stepped ``substeps`` physics steps per control step.

    Attributes:
        models: the N per-environment model copies (edit ``geom_rgba`` / ``body_pos`` freely).
        state: float64 ``[N, nstate]``, MuJoCo's full physics state of each environment.
        sensordata: float64 ``[N, nsensordata]``, the model's sensors at the current state.

    """

    def __init__(
        self, model: mujoco.MjModel, num_envs: int, substeps: int, num_threads: int | None = None
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if substeps < 1:
            raise ValueError(f"substeps must be >= 1, got {substeps}")
        self.num_envs = num_envs
        self.substeps = substeps
        self.num_threads = num_threads if num_threads is not None else (os.cpu_count() or 1)
        self.base_model = model
        self.models = [copy.deepcopy(model) for _ in range(num_envs)]
        self._thread_datas = [mujoco.MjData(model) for _ in range(max(self.num_threads, 1))]
        self._pool: mujoco.rollout.Rollout | None = mujoco.rollout.Rollout(nthread=self.num_threads)
        self.scratch = mujoco.MjData(model)
        self.nstate = mujoco.mj_stateSize(model, STATE_SPEC)
        self.state = np.zeros((num_envs, self.nstate))
        self.sensordata = np.zeros((num_envs, model.nsensordata))
        self._control = np.zeros((num_envs, substeps, model.nu))
        self._state_out = np.zeros((num_envs, substeps, self.nstate))
        self._sensor_out = np.zeros((num_envs, substeps, model.nsensordata))

    def step(self, ctrl: np.ndarray, env_indices: np.ndarray | None = None) -> None:
        """Hold ``ctrl`` (float ``[N, nu]``) for ``substeps`` physics steps in the given environments.

        ``env_indices`` (default all) are the environments that advance; the others keep their state
        and sensors, and cost nothing. As with ``mj_step``, sensors are evaluated at the start of the
        last physics step, so ``sensordata`` trails ``state`` by one physics step (2.5 ms for the arm).
        """
        if self._pool is None:
            raise RuntimeError("BatchedSimulator.step called after close()")
        indices = np.arange(self.num_envs) if env_indices is None else np.asarray(env_indices, np.int64)
        count = len(indices)
        if count == 0:
            return
        self._control[:count] = ctrl[indices, None, :]
        self._pool.rollout(
            self.models if env_indices is None else [self.models[i] for i in indices],
            self._thread_datas,
            self.state[indices],
            self._control[:count],
            skip_checks=True,
            nstep=self.substeps,
            state=self._state_out[:count],
            sensordata=self._sensor_out[:count],
        )
        self.state[indices] = self._state_out[:count, -1]
        self.sensordata[indices] = self._sensor_out[:count, -1]
        bad = indices[~np.isfinite(self.state[indices]).all(axis=1)]
        if len(bad):
            raise FloatingPointError(f"simulation diverged (non-finite state) in envs {bad.tolist()}")

    def load(self, env_index: int, data: mujoco.MjData | None = None) -> mujoco.MjData:
        """Copy environment ``env_index``'s state into ``data`` (default: a scratch MjData) and run forward.

        The returned data has positions, Jacobian inputs, sensors and camera poses up to date, computed
        with that environment's own model copy.
        """
        data = self.scratch if data is None else data
        mujoco.mj_setState(self.models[env_index], data, self.state[env_index], STATE_SPEC)
        mujoco.mj_forward(self.models[env_index], data)
        return data

    def set_env(self, env_index: int, qpos: np.ndarray, qvel: np.ndarray | None = None) -> None:
        """Set environment ``env_index`` to joint positions ``qpos`` (and velocities, default zero)."""
        model, data = self.models[env_index], self.scratch
        mujoco.mj_resetData(model, data)
        data.qpos[:] = qpos
        if qvel is not None:
            data.qvel[:] = qvel
        mujoco.mj_forward(model, data)
        mujoco.mj_getState(model, data, self.state[env_index], STATE_SPEC)
        self.sensordata[env_index] = data.sensordata

    def close(self) -> None:
        """Stop the thread pool (idempotent)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None


class FrameRenderer:
    """One GL context that renders any environment's cameras from its state and model parameters.

    Shadows, reflections and multisampling are off (a 25x lever on throughput; see DESIGN.md).
    """

    def __init__(self, model: mujoco.MjModel, cameras: tuple[str, ...], height: int, width: int) -> None:
        self.model = copy.deepcopy(model)
        self.model.vis.global_.offwidth = max(width, self.model.vis.global_.offwidth)
        self.model.vis.global_.offheight = max(height, self.model.vis.global_.offheight)
        self.model.vis.quality.shadowsize = 0
        self.model.vis.quality.offsamples = 0
        self.cameras = cameras
        self.data = mujoco.MjData(self.model)
        self._renderer: mujoco.Renderer | None = mujoco.Renderer(self.model, height, width)
        self._scene_option = mujoco.MjvOption()
        self._scene_option.flags[mujoco.mjtVisFlag.mjVIS_STATIC] = True
        for flag in (
            mujoco.mjtRndFlag.mjRND_SHADOW,
            mujoco.mjtRndFlag.mjRND_REFLECTION,
            mujoco.mjtRndFlag.mjRND_SKYBOX,
        ):
            self._renderer.scene.flags[flag] = False
        # Free the GL context before the interpreter tears EGL down, even if close() is never called.
        close = weakref.WeakMethod(self.close)
        atexit.register(lambda: (method := close()) is not None and method())

    def render_into(self, inputs: np.ndarray, out: np.ndarray) -> None:
        """Render one environment: ``inputs`` is its `RenderInputs` row, ``out`` uint8 ``[C, H, W, 3]``."""
        if self._renderer is None:
            raise RuntimeError("render called after close()")
        state, geom_rgba, body_pos, body_quat = RenderInputs.split(self.model, inputs)
        self.model.geom_rgba[:] = geom_rgba
        self.model.body_pos[:] = body_pos
        self.model.body_quat[:] = body_quat
        mujoco.mj_setState(self.model, self.data, state, STATE_SPEC)
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_camlight(self.model, self.data)
        for index, camera in enumerate(self.cameras):
            self._renderer.update_scene(self.data, camera=camera, scene_option=self._scene_option)
            self._renderer.render(out=out[index])

    def close(self) -> None:
        """Release the GL context (idempotent)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


class RenderInputs:
    """What rendering one environment needs, packed in one float64 row.

    Layout: full physics state, then ``geom_rgba`` ``[ngeom, 4]``, ``body_pos`` ``[nbody, 3]`` and
    ``body_quat`` ``[nbody, 4]`` (the per-episode parameters of the environment's model copy).
    """

    @staticmethod
    def width(model: mujoco.MjModel) -> int:
        """Length of one row."""
        return mujoco.mj_stateSize(model, STATE_SPEC) + 4 * model.ngeom + 7 * model.nbody

    @staticmethod
    def pack(simulator: BatchedSimulator, env_index: int, row: np.ndarray) -> None:
        """Write environment ``env_index``'s inputs into ``row``."""
        model = simulator.models[env_index]
        nstate, ngeom, nbody = simulator.nstate, model.ngeom, model.nbody
        row[:nstate] = simulator.state[env_index]
        offset = nstate
        for array, size in (
            (model.geom_rgba, 4 * ngeom),
            (model.body_pos, 3 * nbody),
            (model.body_quat, 4 * nbody),
        ):
            row[offset : offset + size] = array.ravel()
            offset += size

    @staticmethod
    def split(
        model: mujoco.MjModel, row: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Unpack a row into ``(state, geom_rgba, body_pos, body_quat)``."""
        nstate, ngeom, nbody = mujoco.mj_stateSize(model, STATE_SPEC), model.ngeom, model.nbody
        bounds = np.cumsum([nstate, 4 * ngeom, 3 * nbody])
        state, rgba, pos, quat = np.split(row, bounds)
        return state, rgba.reshape(ngeom, 4), pos.reshape(nbody, 3), quat.reshape(nbody, 4)


def _render_worker(
    model: mujoco.MjModel,
    cameras: tuple[str, ...],
    height: int,
    width: int,
    inputs_name: str,
    frames_name: str,
    num_envs: int,
    connection: Connection,
) -> None:
    """Worker process: render the environments named in each request into shared memory."""
    inputs_memory = shared_memory.SharedMemory(inputs_name)
    frames_memory = shared_memory.SharedMemory(frames_name)
    inputs: np.ndarray = np.ndarray((num_envs, RenderInputs.width(model)), np.float64, inputs_memory.buf)
    frames: np.ndarray = np.ndarray((num_envs, len(cameras), height, width, 3), np.uint8, frames_memory.buf)
    renderer = FrameRenderer(model, cameras, height, width)
    connection.send("ready")
    try:
        while (request := connection.recv()) is not None:
            for env_index in request:
                renderer.render_into(inputs[env_index], frames[env_index])
            connection.send("done")
    finally:
        renderer.close()
        del inputs, frames
        inputs_memory.close()
        frames_memory.close()


class _RenderPool:
    """Worker processes (spawned, one GL context each) rendering into shared memory."""

    def __init__(
        self, simulator: BatchedSimulator, cameras: tuple[str, ...], height: int, width: int, num_workers: int
    ) -> None:
        n = simulator.num_envs
        self.inputs_memory = shared_memory.SharedMemory(
            create=True, size=8 * n * RenderInputs.width(simulator.base_model)
        )
        self.frames_memory = shared_memory.SharedMemory(
            create=True, size=n * len(cameras) * height * width * 3
        )
        self.inputs: np.ndarray = np.ndarray(
            (n, RenderInputs.width(simulator.base_model)), np.float64, self.inputs_memory.buf
        )
        self.frames: np.ndarray = np.ndarray(
            (n, len(cameras), height, width, 3), np.uint8, self.frames_memory.buf
        )
        context = multiprocessing.get_context("spawn")
        self.connections: list[Connection] = []
        self.processes: list[BaseProcess] = []
        try:
            for _ in range(num_workers):
                parent_end, child_end = context.Pipe()
                process = context.Process(
                    target=_render_worker,
                    args=(
                        simulator.base_model,
                        cameras,
                        height,
                        width,
                        self.inputs_memory.name,
                        self.frames_memory.name,
                        n,
                        child_end,
                    ),
                    daemon=True,
                )
                process.start()
                child_end.close()
                self.connections.append(parent_end)
                self.processes.append(process)
            for connection in self.connections:
                self._receive(connection, RENDER_START_TIMEOUT_S)
        except BaseException:
            self.close()
            raise

    def render(self, env_indices: np.ndarray) -> None:
        """Render ``env_indices`` into ``self.frames``, split evenly over the workers."""
        chunks = [chunk for chunk in np.array_split(env_indices, len(self.connections)) if len(chunk)]
        for connection, chunk in zip(self.connections, chunks, strict=False):
            connection.send(chunk.tolist())
        for connection in self.connections[: len(chunks)]:
            self._receive(connection, RENDER_TIMEOUT_S)

    def _receive(self, connection: Connection, timeout_s: float) -> None:
        if not connection.poll(timeout_s):
            raise RuntimeError(f"a render worker did not answer within {timeout_s:.0f} s")
        try:
            connection.recv()
        except EOFError:
            raise RuntimeError("a render worker exited unexpectedly (see its error above)") from None

    def close(self) -> None:
        """Stop the workers and free the shared memory."""
        for connection in self.connections:
            with contextlib.suppress(OSError):
                connection.send(None)
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
        del self.inputs, self.frames
        for memory in (self.inputs_memory, self.frames_memory):
            memory.close()
            memory.unlink()


class BatchedRenderer:
    """Off-screen rendering of a `BatchedSimulator`'s environments, in this process or in workers.

    With ``num_workers=0`` one GL context in this process renders every environment in turn. With
    ``num_workers >= 1``, that many spawned processes (one GL context each) render slices of the batch
    into shared memory in parallel: software rendering does not scale with threads (the GL calls hold
    the GIL), but it does with processes, and on a GPU machine each process gets its own EGL context.
    """

    def __init__(
        self,
        simulator: BatchedSimulator,
        cameras: tuple[str, ...],
        height: int,
        width: int,
        num_workers: int = 0,
    ) -> None:
        for camera in cameras:
            if mujoco.mj_name2id(simulator.base_model, mujoco.mjtObj.mjOBJ_CAMERA, camera) < 0:
                raise ValueError(f"unknown camera {camera!r}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.simulator = simulator
        self.cameras = cameras
        self.height, self.width = height, width
        self._local = (
            FrameRenderer(simulator.base_model, cameras, height, width) if num_workers == 0 else None
        )
        self._pool = _RenderPool(simulator, cameras, height, width, num_workers) if num_workers else None
        self._finalizer = weakref.finalize(self, BatchedRenderer._release, self._local, self._pool)

    def render(self, env_indices: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Render every camera for the given environments (default all).

        Returns:
            ``{camera: uint8 [len(env_indices), H, W, 3]}``.

        """
        if not self._finalizer.alive:
            raise RuntimeError("BatchedRenderer.render called after close()")
        indices = np.arange(self.simulator.num_envs) if env_indices is None else np.asarray(env_indices)
        if self._pool is not None:
            for env_index in indices:
                RenderInputs.pack(self.simulator, int(env_index), self._pool.inputs[env_index])
            self._pool.render(indices)
            frames = self._pool.frames[indices]
        else:
            assert self._local is not None
            frames = np.empty((len(indices), len(self.cameras), self.height, self.width, 3), np.uint8)
            row = np.empty(RenderInputs.width(self.simulator.base_model))
            for position, env_index in enumerate(indices):
                RenderInputs.pack(self.simulator, int(env_index), row)
                self._local.render_into(row, frames[position])
        return {camera: frames[:, index] for index, camera in enumerate(self.cameras)}

    def close(self) -> None:
        """Release the GL context(s), worker processes and shared memory (idempotent)."""
        self._finalizer()

    @staticmethod
    def _release(local: FrameRenderer | None, pool: _RenderPool | None) -> None:
        if local is not None:
            local.close()
        if pool is not None:
            pool.close()


# --------------------------------------------------------------------------------------------------
# The batched-env bookkeeping our MuJoCo suites share


INSTRUCTION_CHARSET = string.ascii_letters + string.digits + " ,.'-"
ENVIRONMENT_STATE_BOUND = 10.0  # observation.environment_state values (metres; cos/sin) lie within +-this


class MujocoBatchedEnv(BatchedEnv):
    """What every MuJoCo suite of ours (``arm``, ``so101``) does the same way, on a `BatchedSimulator`.

    This base validates the constructor's arguments, builds the spaces, the simulator and the renderer,
    and runs the `sim.core` contract: `reset` (seed, split, tasks, initial-state ids), `step` (episode
    limits, termination on success, ``SameStep`` autoreset with ``final_obs``, ``Disabled`` autoreset with
    finished envs frozen), observations, ``info`` and `close`. A suite supplies, besides ``TASK_NAMES``,
    ``CAMERA_NAMES`` and ``SUITE`` (its name in messages):

    - `_reset_scene`: put env ``i`` in initial state ``k`` of its task (and start its expert);
    - `_controls`: actions ``[N, A]`` in [-1, 1] -> actuator controls ``[N, nu]``;
    - `_task_success`: the success check of one task over all N envs;
    - `_state`: ``observation.state`` ``[N, S]``;
    - `expert_action`;
    - optionally `_environment_state` (``observation.environment_state`` ``[N, E]``), with
      ``ENVIRONMENT_STATE_DIM`` = E (0: the observations have no such key), each value within
      +-`ENVIRONMENT_STATE_BOUND` (positions in metres, angles' cosines and sines).
    """

    SUITE: ClassVar[str]
    ENVIRONMENT_STATE_DIM: ClassVar[int] = 0

    def __init__(
        self,
        num_envs: int,
        tasks: Sequence[str] | None,
        cameras: Sequence[str],
        image_size: int,
        autoreset_mode: AutoresetMode | str,
        *,
        task_specs: dict[str, TaskSpec],
        model: mujoco.MjModel,
        substeps: int,
        control_hz: int,
        action_dim: int,
        state_space: gym.spaces.Box,
        num_threads: int | None,
        render_workers: int | None,
    ) -> None:
        """Validate the arguments and build the spaces, the simulator and the renderer.

        Args:
            num_envs: N.
            tasks: task names, assigned to envs round-robin (None: every task of the suite).
            cameras: cameras rendered into observations; empty for none.
            image_size: square image side in pixels.
            autoreset_mode: ``SameStep`` or ``Disabled`` (see `sim.core`).
            task_specs: every task of the suite, by name (``TASK_NAMES`` order).
            model: the scene (copied per env).
            substeps: physics steps per control step.
            control_hz: control steps per second (``metadata["render_fps"]``).
            action_dim: A.
            state_space: the single env's ``observation.state`` space.
            num_threads: MuJoCo rollout threads (default: one per core).
            render_workers: render processes (default: one per core from 4 envs, else in-process).

        Raises:
            ValueError: a bad ``num_envs``, task, camera, image size or autoreset mode (the message says
                which and what is allowed).

        """
        suite = self.SUITE
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        task_names = tuple(tasks) if tasks is not None else self.TASK_NAMES
        unknown = sorted(set(task_names) - set(self.TASK_NAMES))
        if unknown or not task_names:
            raise ValueError(
                f"unknown {suite} task(s) {unknown or task_names}; known tasks: {', '.join(self.TASK_NAMES)}"
            )
        unknown_cameras = sorted(set(cameras) - set(self.CAMERA_NAMES))
        if unknown_cameras:
            raise ValueError(
                f"unknown camera(s) {unknown_cameras}; the {suite} scene has {', '.join(self.CAMERA_NAMES)}"
            )
        if not 16 <= image_size <= 512:
            raise ValueError(f"image_size must be within [16, 512] pixels, got {image_size}")
        mode = AutoresetMode(autoreset_mode)
        if mode not in (AutoresetMode.SAME_STEP, AutoresetMode.DISABLED):
            raise ValueError(f"autoreset_mode must be 'SameStep' or 'Disabled', got {autoreset_mode!r}")

        self.num_envs = num_envs
        self.task_specs = task_specs
        self.cameras = tuple(cameras)
        self.image_size = image_size
        self.metadata = {"autoreset_mode": mode, "render_fps": control_hz}
        self._action_dim = action_dim
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)
        observation_spaces: dict[str, gym.Space[Any]] = {
            OBS_STATE: state_space,
            TASK: gym.spaces.Text(max_length=200, charset=INSTRUCTION_CHARSET),
        }
        if self.ENVIRONMENT_STATE_DIM:
            observation_spaces[OBS_ENV_STATE] = gym.spaces.Box(
                -ENVIRONMENT_STATE_BOUND, ENVIRONMENT_STATE_BOUND, (self.ENVIRONMENT_STATE_DIM,), np.float32
            )
        for camera in self.cameras:
            observation_spaces[image_key(camera)] = gym.spaces.Box(
                0, 255, (image_size, image_size, 3), np.uint8
            )
        self.single_observation_space = gym.spaces.Dict(observation_spaces)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)

        if render_workers is None:
            render_workers = (os.cpu_count() or 1) if num_envs >= 4 else 0
        self.sim = BatchedSimulator(model, num_envs, substeps, num_threads)
        self.renderer = (
            BatchedRenderer(self.sim, self.cameras, image_size, image_size, render_workers)
            if self.cameras
            else None
        )
        first = task_names * (num_envs // len(task_names) + 1)
        self._tasks: list[str] = list(first[:num_envs])
        self._split = InitStateSplit.TRAIN
        self._init_state_ids = np.zeros(num_envs, np.int64)
        self._task_ids = np.zeros(num_envs, np.int64)  # index in TASK_NAMES of each env's task
        self._steps = np.zeros(num_envs, np.int64)
        self._max_steps = np.zeros(num_envs, np.int64)
        self._done = np.zeros(num_envs, bool)
        self._ended_by_success = np.zeros(num_envs, bool)
        # The last observation returned (None until `reset`): DISABLED autoreset re-renders only the
        # envs still running and keeps the finished ones' frames from it.
        self._last_obs: dict[str, Any] | None = None
        self._rng = np.random.default_rng()
        self._closed = False

    # ------------------------------------------------------------------------------------------------
    # What a suite supplies

    @abc.abstractmethod
    def _reset_scene(self, env_index: int, task: str, state_id: int) -> None:
        """Env ``env_index`` to initial state ``state_id`` of ``task`` (current split); start its expert."""

    @abc.abstractmethod
    def _controls(self, actions: np.ndarray) -> np.ndarray:
        """Actions ``[N, A]`` in [-1, 1] -> actuator controls ``[N, nu]`` for the next control step."""

    @abc.abstractmethod
    def _task_success(self, task: str) -> np.ndarray:
        """Whether each of the N scenes, judged as ``task``, is solved now: bool ``[N]``."""

    @abc.abstractmethod
    def _state(self) -> np.ndarray:
        """``observation.state`` of the N envs, float32 ``[N, S]``."""

    def _environment_state(self) -> np.ndarray:
        """``observation.environment_state`` of the N envs, float32 ``[N, E]`` (suites that declare E)."""
        raise NotImplementedError(f"the {self.SUITE} suite has no environment state")

    # ------------------------------------------------------------------------------------------------
    # Contract

    @property
    def tasks(self) -> tuple[str, ...]:
        """The task each environment is running."""
        return tuple(self._tasks)

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Reset all N envs; see `sim.core` for ``options`` (split, tasks, init_state_ids)."""
        checked_seed = check_seed(seed)
        request = parse_reset_options(options, self.num_envs, list(self.TASK_NAMES))
        if checked_seed is not None:
            self._rng = np.random.default_rng(checked_seed)
        if request.tasks is not None:
            self._tasks = list(request.tasks)
        self._split = request.split
        if request.init_state_ids is not None:
            for env_index, state_id in enumerate(request.init_state_ids):
                limit = self.task_specs[self._tasks[env_index]].num_states(self._split)
                if state_id >= limit:
                    raise ValueError(
                        f"init_state_ids[{env_index}] = {state_id} is out of range: task "
                        f"{self._tasks[env_index]!r} has {limit} {self._split} initial states"
                    )
            ids = request.init_state_ids
        else:
            ids = np.array([self._draw_state_id(i) for i in range(self.num_envs)])
        for env_index in range(self.num_envs):
            self._reset_env(env_index, int(ids[env_index]))
        self._last_obs = self._observe()
        return self._last_obs, self._info(np.zeros(self.num_envs, bool))

    def step(self, actions: Any) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Advance every env one control step with ``actions`` ``[N, A]`` in [-1, 1]; see `sim.core`."""
        self._check_open()
        if self._last_obs is None:
            raise RuntimeError("step() called before reset(): reset the environment first")
        clipped, clipped_mask = validate_actions(actions, self.num_envs, self._action_dim)
        active = ~self._done
        # Finished envs (DISABLED autoreset only) stay where they ended, neither simulated nor rendered.
        running = np.flatnonzero(active)
        self.sim.step(self._controls(clipped), running)
        self._steps[active] += 1
        success = self._success()
        terminated = success & active
        truncated = active & ~success & (self._steps >= self._max_steps)
        reward = terminated.astype(np.float64)
        info = self._info(success)
        info["action_clipped"] = clipped_mask
        if self.metadata["autoreset_mode"] is AutoresetMode.DISABLED:
            terminated |= self._done & self._ended_by_success
            truncated |= self._done & ~self._ended_by_success
            self._ended_by_success[active] = terminated[active]
            self._done |= terminated | truncated
            obs = self._observe(reuse=self._last_obs, changed=running)
        else:
            finished = np.flatnonzero(terminated | truncated)
            if len(finished):
                final_obs = self._observe()
                info["final_obs"] = final_obs
                info["_final_obs"] = terminated | truncated
                info["final_success"] = success.copy()
                for env_index in finished:
                    self._reset_env(int(env_index), self._draw_state_id(int(env_index)))
                info["task_id"] = self._task_ids.copy()
                info["init_state_id"] = self._init_state_ids.copy()
                obs = self._observe(reuse=final_obs, changed=finished)
            else:
                obs = self._observe()
        self._last_obs = obs
        return obs, reward, terminated, truncated, info

    def close(self, **kwargs: Any) -> None:
        """Release the thread pool and the render context (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.sim.close()
        if self.renderer is not None:
            self.renderer.close()

    # ------------------------------------------------------------------------------------------------
    # Internals

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the environment is closed")

    def _draw_state_id(self, env_index: int) -> int:
        return int(self._rng.integers(self.task_specs[self._tasks[env_index]].num_states(self._split)))

    def _reset_env(self, env_index: int, state_id: int) -> None:
        task = self._tasks[env_index]
        self._reset_scene(env_index, task, state_id)
        self._task_ids[env_index] = self.TASK_NAMES.index(task)
        self._max_steps[env_index] = self.task_specs[task].max_steps
        self._init_state_ids[env_index] = state_id
        self._steps[env_index] = 0
        self._done[env_index] = False
        self._ended_by_success[env_index] = False

    def _success(self) -> np.ndarray:
        success = np.zeros(self.num_envs, bool)
        for task_index, task in enumerate(self.TASK_NAMES):
            mask = self._task_ids == task_index
            if mask.any():
                success[mask] = self._task_success(task)[mask]
        return success

    def _observe(
        self, reuse: dict[str, Any] | None = None, changed: np.ndarray | None = None
    ) -> dict[str, Any]:
        """The batched observation; with ``reuse``, only the ``changed`` envs are rendered again."""
        obs: dict[str, Any] = {OBS_STATE: self._state()}
        if self.ENVIRONMENT_STATE_DIM:
            obs[OBS_ENV_STATE] = self._environment_state()
        if self.renderer is not None:
            for camera, frames in self.renderer.render(changed).items():
                key = image_key(camera)
                if reuse is None:
                    obs[key] = frames
                else:
                    obs[key] = reuse[key].copy()
                    obs[key][changed] = frames
        obs[TASK] = tuple(self.task_specs[task].instruction for task in self._tasks)
        return obs

    def _info(self, success: np.ndarray) -> dict[str, Any]:
        return {
            "success": success,
            "task_id": self._task_ids.copy(),
            "init_state_id": self._init_state_ids.copy(),
        }
