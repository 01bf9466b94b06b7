"""In-process batched MuJoCo stepping and rendering, shared by our MuJoCo suites (arm, car, drone).

`BatchedSimulator` steps N copies of one model in parallel with MuJoCo's own thread pool
(`mujoco.rollout.Rollout`, which releases the GIL), so cheap environments use every core without
inter-process traffic. Each environment has its own `MjModel` copy, so per-episode model parameters
(colours, positions of static fixtures) can differ between environments while the state layout stays
the same. `BatchedRenderer` renders any environment's cameras off-screen, in this process or in worker
processes over shared memory.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import multiprocessing
import os
import weakref
from multiprocessing import shared_memory
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import mujoco
import mujoco.rollout
import numpy as np

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

    def step(self, ctrl: np.ndarray) -> None:
        """Hold ``ctrl`` (float ``[N, nu]``) for ``substeps`` physics steps in every environment.

        As with ``mj_step``, sensors are evaluated at the start of the last physics step, so
        ``sensordata`` trails ``state`` by one physics step (2.5 ms for the arm).
        """
        if self._pool is None:
            raise RuntimeError("BatchedSimulator.step called after close()")
        self._control[:] = ctrl[:, None, :]
        self._pool.rollout(
            self.models,
            self._thread_datas,
            self.state,
            self._control,
            skip_checks=True,
            nstep=self.substeps,
            state=self._state_out,
            sensordata=self._sensor_out,
        )
        self.state[:] = self._state_out[:, -1]
        self.sensordata[:] = self._sensor_out[:, -1]
        bad = ~np.isfinite(self.state).all(axis=1)
        if bad.any():
            raise FloatingPointError(
                f"simulation diverged (non-finite state) in envs {np.flatnonzero(bad).tolist()}"
            )

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
