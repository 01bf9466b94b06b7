"""In-process batched MuJoCo stepping and rendering, shared by our MuJoCo suites (arm, car, drone).

`BatchedSimulator` steps N copies of one model in parallel with MuJoCo's own thread pool
(`mujoco.rollout.Rollout`, which releases the GIL), so cheap environments use every core without
inter-process traffic. Each environment has its own `MjModel` copy, so per-episode model parameters
(colours, positions of static fixtures) can differ between environments while the state layout stays
the same. `BatchedRenderer` renders any environment's cameras off-screen with one GL context.
"""

from __future__ import annotations

import atexit
import copy
import os
import weakref

import mujoco
import mujoco.rollout
import numpy as np

STATE_SPEC = mujoco.mjtState.mjSTATE_FULLPHYSICS


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


class BatchedRenderer:
    """Off-screen rendering of a `BatchedSimulator`'s environments, cheap by default.

    One GL context renders every environment in turn: before each frame the environment's own
    per-episode model parameters (geom colours, body poses) are copied into the render model. Shadows,
    reflections and multisampling are off (a 25x lever on throughput; see DESIGN.md).
    """

    def __init__(
        self, simulator: BatchedSimulator, cameras: tuple[str, ...], height: int, width: int
    ) -> None:
        for camera in cameras:
            if mujoco.mj_name2id(simulator.base_model, mujoco.mjtObj.mjOBJ_CAMERA, camera) < 0:
                raise ValueError(f"unknown camera {camera!r}")
        self.simulator = simulator
        self.cameras = cameras
        self.height, self.width = height, width
        self.model = copy.deepcopy(simulator.base_model)
        self.model.vis.global_.offwidth = max(width, self.model.vis.global_.offwidth)
        self.model.vis.global_.offheight = max(height, self.model.vis.global_.offheight)
        self.model.vis.quality.shadowsize = 0
        self.model.vis.quality.offsamples = 0
        self.data = mujoco.MjData(self.model)
        self._renderer: mujoco.Renderer | None = mujoco.Renderer(self.model, height, width)
        scene_option = mujoco.MjvOption()
        scene_option.flags[mujoco.mjtVisFlag.mjVIS_STATIC] = True
        self._scene_option = scene_option
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = False
        # Free the GL context before the interpreter tears EGL down, even if close() is never called.
        close = weakref.WeakMethod(self.close)
        atexit.register(lambda: (method := close()) is not None and method())

    def render(self, env_indices: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Render every camera for the given environments (default all).

        Returns:
            ``{camera: uint8 [len(env_indices), H, W, 3]}``.

        """
        if self._renderer is None:
            raise RuntimeError("BatchedRenderer.render called after close()")
        indices = np.arange(self.simulator.num_envs) if env_indices is None else env_indices
        frames = {c: np.empty((len(indices), self.height, self.width, 3), np.uint8) for c in self.cameras}
        for row, env_index in enumerate(indices):
            env_model = self.simulator.models[env_index]
            self.model.geom_rgba[:] = env_model.geom_rgba
            self.model.body_pos[:] = env_model.body_pos
            self.model.body_quat[:] = env_model.body_quat
            mujoco.mj_setState(self.model, self.data, self.simulator.state[env_index], STATE_SPEC)
            mujoco.mj_kinematics(self.model, self.data)
            mujoco.mj_camlight(self.model, self.data)
            for camera in self.cameras:
                self._renderer.update_scene(self.data, camera=camera, scene_option=self._scene_option)
                self._renderer.render(out=frames[camera][row])
        return frames

    def close(self) -> None:
        """Release the GL context (idempotent)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
