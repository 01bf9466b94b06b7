"""A single-environment `gymnasium.Env` view of any `BatchedEnv`, and the ``vla_rl/<Task>-v0`` ids.

``gymnasium.make("vla_rl/PlaceInBowl-v0")`` gives one arm-suite environment with the standard
single-env API (observation dict of unbatched arrays, ``task`` a string, scalar reward). It exists for
tools that expect one environment (``gymnasium.utils.env_checker``, ``SyncVectorEnv``); training uses
the batched environments directly.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from sim.core import TASK, AutoresetMode, BatchedEnv


class SingleEnv(gym.Env[dict[str, Any], np.ndarray]):
    """One environment of a `BatchedEnv` built with ``num_envs=1`` and autoreset disabled.

    ``reset(options=...)`` accepts ``split`` and ``init_state_id`` (an int); actions are float
    ``[A]``; observations are the batched env's with the leading dimension removed.
    """

    def __init__(self, batched_env: BatchedEnv, render_mode: str | None = None) -> None:
        if batched_env.num_envs != 1:
            raise ValueError(f"SingleEnv wraps a batched env of exactly 1 env, got {batched_env.num_envs}")
        if batched_env.metadata.get("autoreset_mode") is not AutoresetMode.DISABLED:
            raise ValueError("SingleEnv needs the batched env built with autoreset_mode='Disabled'")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if render_mode == "rgb_array" and not batched_env.cameras:
            raise ValueError("render_mode='rgb_array' needs a batched env with at least one camera")
        self.batched_env = batched_env
        self.render_mode = render_mode
        self.observation_space = batched_env.single_observation_space
        self.action_space = batched_env.single_action_space
        self.metadata = {
            "render_modes": ["rgb_array"],
            "render_fps": batched_env.metadata.get("render_fps", 20),
        }
        self._last_obs: dict[str, Any] | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Reset; ``options`` may hold ``split`` ('train' | 'eval') and ``init_state_id`` (int)."""
        super().reset(seed=seed)
        options = dict(options or {})
        batched_options: dict[str, Any] = {"split": options.pop("split", "train")}
        if "init_state_id" in options:
            batched_options["init_state_ids"] = [options.pop("init_state_id")]
        if options:
            raise ValueError(f"unknown reset option(s) {sorted(options)}; valid: 'split', 'init_state_id'")
        obs, info = self.batched_env.reset(seed=seed, options=batched_options)
        return self._unbatch(obs), _unbatch_info(info)

    def step(self, action: Any) -> tuple[dict[str, Any], SupportsFloat, bool, bool, dict[str, Any]]:
        """Step with one action ``[A]``."""
        obs, reward, terminated, truncated, info = self.batched_env.step(np.asarray(action)[None])
        return (
            self._unbatch(obs),
            float(reward[0]),
            bool(terminated[0]),
            bool(truncated[0]),
            _unbatch_info(info),
        )

    def render(self) -> np.ndarray | None:
        """The first camera's current frame ``[H, W, 3]`` (rgb_array mode), else None."""
        if self.render_mode is None or self._last_obs is None:
            return None
        return self._last_obs[f"observation.images.{self.batched_env.cameras[0]}"]

    def expert_action(self) -> np.ndarray:
        """The scripted expert's action ``[A]`` for the current state."""
        return self.batched_env.expert_action()[0]

    def close(self) -> None:
        """Close the underlying batched env."""
        self.batched_env.close()

    def _unbatch(self, obs: dict[str, Any]) -> dict[str, Any]:
        single = {key: value[0] for key, value in obs.items() if key != TASK}
        single[TASK] = obs[TASK][0]
        self._last_obs = single
        return single


def _unbatch_info(info: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value[0] if isinstance(value, np.ndarray) else value
        for key, value in info.items()
        if not isinstance(value, dict)
    }


def make_arm_env(
    task: str,
    cameras: tuple[str, ...] = ("agentview", "wrist"),
    image_size: int = 128,
    render_mode: str | None = None,
) -> SingleEnv:
    """Entry point of the ``vla_rl/<Task>-v0`` ids: one arm-suite environment running ``task``."""
    from sim.mujoco.arm.env import ArmBatchedEnv

    env = ArmBatchedEnv(
        num_envs=1, tasks=[task], cameras=cameras, image_size=image_size, autoreset_mode="Disabled"
    )
    return SingleEnv(env, render_mode=render_mode)


def gym_id(task: str) -> str:
    """``place_in_bowl`` -> ``vla_rl/PlaceInBowl-v0``."""
    return "vla_rl/" + "".join(part.capitalize() for part in task.split("_")) + "-v0"


def register_arm_tasks() -> None:
    """Register every arm task with gymnasium (idempotent)."""
    from sim.mujoco.arm.tasks import ARM_TASKS

    for task in ARM_TASKS:
        if gym_id(task) not in gym.registry:
            gym.register(id=gym_id(task), entry_point="sim.gym:make_arm_env", kwargs={"task": task})
