"""A tiny, deterministic numpy `BatchedEnv` for testing env plumbing (vectorization, restarts) cheaply.

k points in the plane must each reach a goal. Observations: ``observation.state`` float32 [k, 4] (point,
goal), a fake camera ``observation.images.top`` uint8 [k, 6, 6, 3] and ``task`` strings. Environment j
of a reset with seed s draws its initial states and noise from ``default_rng(s + j)``, so a process-parallel
vector of these envs can be compared with one in-process env of all N. ``start_noise=0`` makes every
start exactly its initial state (fully deterministic without a seed).

Fault injection (for worker-restart tests): the ``fault_*`` tasks behave like ``reach``, except that the
first time one of them runs ``step`` (or ``expert_action``) while ``fault_file`` exists and names that
method, the file is removed (one shot, across processes) and the env raises, kills its own process, or
hangs.
"""

from __future__ import annotations

import os
import signal
import string
import time
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from sim.core import (
    OBS_STATE,
    AutoresetMode,
    BatchedEnv,
    InitStateSplit,
    TaskSpec,
    check_seed,
    image_key,
    parse_reset_options,
    validate_actions,
)

MAX_STEPS = 6
SPEED = 0.25
GOAL_RADIUS = 0.15
IMAGE_SIZE = 6
CAMERA = "top"
TASK_SPECS = {
    name: TaskSpec(name, instruction, MAX_STEPS, num_train_states=12, num_eval_states=4)
    for name, instruction in [
        ("reach", "move the point to the goal"),
        ("reach_far", "move the point to the far goal"),
        ("fault_raise", "reach, then raise a simulator error"),
        ("fault_kill", "reach, then kill the worker process"),
        ("fault_hang", "reach, then hang"),
    ]
}
TASK_NAMES = sorted(TASK_SPECS)
_STATE_RNG = np.random.default_rng(1234)
INIT_STATES = {
    # [num_states, 4]: start xy, goal xy; train and eval drawn apart, so they are disjoint.
    InitStateSplit.TRAIN: _STATE_RNG.uniform(-1.0, 1.0, size=(12, 4)),
    InitStateSplit.EVAL: _STATE_RNG.uniform(-1.0, 1.0, size=(4, 4)),
}


class PointEnv(BatchedEnv):
    """k points that must reach their goals; see the module docstring."""

    def __init__(
        self,
        num_envs: int = 2,
        autoreset_mode: AutoresetMode = AutoresetMode.SAME_STEP,
        fault_file: str | None = None,
        hang_s: float = 60.0,
        start_noise: float = 0.01,
    ) -> None:
        self.num_envs = num_envs
        self.metadata = {"autoreset_mode": autoreset_mode}
        self.task_specs = TASK_SPECS
        self.cameras = (CAMERA,)
        self.single_observation_space = spaces.Dict(
            {
                OBS_STATE: spaces.Box(-np.inf, np.inf, (4,), np.float32),
                image_key(CAMERA): spaces.Box(0, 255, (IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8),
                "task": spaces.Text(100, charset=string.printable),
            }
        )
        self.single_action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = spaces.Dict(
            {
                OBS_STATE: spaces.Box(-np.inf, np.inf, (num_envs, 4), np.float32),
                image_key(CAMERA): spaces.Box(0, 255, (num_envs, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8),
                "task": spaces.Tuple([spaces.Text(100, charset=string.printable)] * num_envs),
            }
        )
        self.action_space = spaces.Box(-1.0, 1.0, (num_envs, 2), np.float32)
        self.fault_file = fault_file
        self.hang_s = hang_s
        self.start_noise = start_noise
        self._rngs = [np.random.default_rng() for _ in range(num_envs)]
        self._tasks = ["reach"] * num_envs
        self._split = InitStateSplit.TRAIN
        self._state_ids = np.zeros(num_envs, dtype=np.int64)
        self._pos = np.zeros((num_envs, 2))
        self._goal = np.zeros((num_envs, 2))
        self._t = np.zeros(num_envs, dtype=np.int64)
        self._done: np.ndarray = np.zeros(num_envs, dtype=bool)
        self._terminated: np.ndarray = np.zeros(num_envs, dtype=bool)
        self._truncated: np.ndarray = np.zeros(num_envs, dtype=bool)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self._tasks)

    def expert_action(self) -> np.ndarray:
        self._maybe_fault("expert_action")
        return np.clip((self._goal - self._pos) / SPEED, -1.0, 1.0).astype(np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        seed = check_seed(seed)
        request = parse_reset_options(options, self.num_envs, TASK_NAMES)
        if seed is not None:
            self._rngs = [np.random.default_rng(seed + j) for j in range(self.num_envs)]
        self._split = request.split
        if request.tasks is not None:
            self._tasks = list(request.tasks)
        num_states = len(INIT_STATES[self._split])
        for j in range(self.num_envs):
            if request.init_state_ids is None:
                state_id = int(self._rngs[j].integers(num_states))
            else:
                state_id = int(request.init_state_ids[j])
                if state_id >= num_states:
                    raise ValueError(f"init_state_ids[{j}]={state_id} but split has {num_states} states")
            self._start(j, state_id)
        return self._obs(), self._info(np.zeros(self.num_envs, dtype=bool))

    def step(
        self, actions: object
    ) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        clipped, clipped_mask = validate_actions(actions, self.num_envs, 2)
        self._maybe_fault("step")
        active = ~self._done
        self._pos[active] += SPEED * clipped[active]
        self._t[active] += 1
        success = np.linalg.norm(self._goal - self._pos, axis=1) < GOAL_RADIUS
        self._terminated = np.where(active, success, self._terminated)
        self._truncated = np.where(active, (self._t >= MAX_STEPS) & ~success, self._truncated)
        reward = (success & active).astype(np.float64)
        finished = self._terminated | self._truncated
        terminated, truncated = self._terminated.copy(), self._truncated.copy()
        obs = self._obs()
        if self.metadata["autoreset_mode"] is AutoresetMode.DISABLED:
            self._done = finished
            return obs, reward, terminated, truncated, self._info(clipped_mask, success)
        final_info: dict[str, Any] = {}
        if finished.any():
            final_info = {"final_obs": obs, "_final_obs": finished, "final_success": success & finished}
            num_states = len(INIT_STATES[self._split])
            for j in np.flatnonzero(finished):
                self._start(int(j), int(self._state_ids[j] + 1) % num_states)
            obs = self._obs()
        info = self._info(clipped_mask, success & ~finished)
        info.update(final_info)
        return obs, reward, terminated, truncated, info

    def _start(self, j: int, state_id: int) -> None:
        state = INIT_STATES[self._split][state_id]
        self._state_ids[j] = state_id
        self._pos[j] = state[:2] + self._rngs[j].normal(0.0, self.start_noise, size=2)
        self._goal[j] = state[2:]
        self._t[j] = 0
        self._done[j] = self._terminated[j] = self._truncated[j] = False

    def _obs(self) -> dict[str, Any]:
        image = np.zeros((self.num_envs, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        rows = np.arange(self.num_envs)
        for channel, xy in enumerate([self._pos, self._goal]):
            pixel = np.clip(((xy + 1.0) / 2.0 * IMAGE_SIZE).astype(int), 0, IMAGE_SIZE - 1)
            image[rows, pixel[:, 1], pixel[:, 0], channel] = 255
        return {
            OBS_STATE: np.concatenate([self._pos, self._goal], axis=1).astype(np.float32),
            image_key(CAMERA): image,
            "task": tuple(TASK_SPECS[name].instruction for name in self._tasks),
        }

    def _info(self, clipped_mask: np.ndarray, success: np.ndarray | None = None) -> dict[str, Any]:
        return {
            "success": np.zeros(self.num_envs, dtype=bool) if success is None else success,
            "task_id": np.array([TASK_NAMES.index(name) for name in self._tasks], dtype=np.int64),
            "init_state_id": self._state_ids.copy(),
            "action_clipped": clipped_mask,
        }

    def _maybe_fault(self, method: str) -> None:
        faulty = [name for name in self._tasks if name.startswith("fault_")]
        if not faulty or self.fault_file is None:
            return
        path = Path(self.fault_file)
        try:
            if path.read_text() != method:
                return
            path.unlink()  # claim the one-shot fault; only one process succeeds
        except FileNotFoundError:
            return
        if faulty[0] == "fault_raise":
            raise RuntimeError("simulated simulator error")
        if faulty[0] == "fault_kill":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(self.hang_s)


def make_broken_env() -> BatchedEnv:
    """A factory whose env cannot be built (for start-failure tests)."""
    raise RuntimeError("simulated build failure")
