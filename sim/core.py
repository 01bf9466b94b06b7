"""The batched environment contract shared by every simulator, the real-robot layer and the learner.

A `BatchedEnv` holds N environments in one object and follows `gymnasium.vector.VectorEnv`:

- ``reset(seed=, options=) -> (obs, info)`` resets all N environments.
- ``step(actions[N, A]) -> (obs, reward[N], terminated[N], truncated[N], info)``.
- ``close()`` releases simulators, render contexts and worker processes.

Observations are dicts with LeRobot's keys (the same keys flow into datasets and policies):

- ``observation.state``: float32 ``[N, S]`` proprioception (end-effector pose, gripper).
- ``observation.images.<camera>``: uint8 ``[N, H, W, 3]``, only for the cameras asked for.
- ``task``: a tuple of N language instructions (one per environment).
- ``observation.environment_state`` (optional, simulators only): float32 ``[N, E]`` privileged object
  state (e.g. a block's pose). A training target for auxiliary losses, never a policy input: a real
  robot has no such sensor.

``info["success"]`` is a bool ``[N]`` array: whether each environment's task is solved at this step.
``info["task_id"]`` and ``info["init_state_id"]`` (int ``[N]``) say which task and initial state
each environment is running.

Autoreset (``metadata["autoreset_mode"]``):

- `AutoresetMode.SAME_STEP`: when an environment terminates or truncates, it is reset inside the same
  ``step`` call; the returned observation is the first of the new episode, and the last observation of
  the finished one is in ``info["final_obs"]`` (a dict of arrays over all N envs, valid where
  ``info["_final_obs"]`` is True), with its success in ``info["final_success"]``. The new episode
  starts from an initial state of the same split drawn by the env's generator (seeded by ``reset``).
- `AutoresetMode.DISABLED`: a finished environment keeps returning its final observation with
  ``terminated`` or ``truncated`` set until ``reset`` is called; its actions are ignored (and an
  implementation should not spend time simulating or rendering it). This is the mode for collecting
  whole episodes from chosen initial states (GRPO groups, evaluation).

Initial states: each task has two disjoint, deterministic sets, ``train`` and ``eval``. Learners only
ever reset to ``train`` states; evaluation only uses ``eval`` states. Choose them through
``reset(options={"split": "eval", "init_state_ids": [...], "tasks": [...]})``.

Actions are float32 ``[N, A]`` in [-1, 1] per dimension. Values outside that range are clipped (and
counted in ``info["action_clipped"]``); NaN or infinite values, a wrong shape or a non-numeric dtype
raise `ValueError` / `TypeError` naming the problem, before anything is simulated.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

__all__ = [
    "ACTION",
    "OBS_ENV_STATE",
    "OBS_IMAGE_PREFIX",
    "OBS_STATE",
    "TASK",
    "AutoresetMode",
    "BatchedEnv",
    "InitStateSplit",
    "TaskSpec",
    "check_seed",
    "image_key",
    "parse_reset_options",
    "validate_actions",
]

OBS_STATE = "observation.state"
OBS_ENV_STATE = "observation.environment_state"
OBS_IMAGE_PREFIX = "observation.images."
TASK = "task"
ACTION = "action"


def image_key(camera: str) -> str:
    """Return the observation key of a camera, e.g. ``observation.images.agentview``."""
    return f"{OBS_IMAGE_PREFIX}{camera}"


class InitStateSplit(enum.StrEnum):
    """The two disjoint sets of initial states every task has."""

    TRAIN = "train"
    EVAL = "eval"


@dataclass(frozen=True)
class TaskSpec:
    """What a task is, independently of the simulator that runs it.

    Attributes:
        name: registry name, snake_case (``pick_place_bowl``).
        instruction: the language instruction given to the policy.
        max_steps: episode length limit in control steps (truncation).
        num_train_states: size of the ``train`` initial-state set.
        num_eval_states: size of the ``eval`` initial-state set.

    """

    name: str
    instruction: str
    max_steps: int
    num_train_states: int = 500
    num_eval_states: int = 50

    def num_states(self, split: InitStateSplit) -> int:
        """Return how many initial states ``split`` has."""
        return self.num_train_states if split is InitStateSplit.TRAIN else self.num_eval_states


def check_seed(seed: object) -> int | None:
    """Validate a ``reset`` seed: None or a non-negative int (numpy ints accepted)."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__} ({seed!r})")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    return int(seed)


def validate_actions(actions: object, num_envs: int, action_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Check a batch of actions at the env boundary and clip it to [-1, 1].

    Args:
        actions: array-like ``[N, A]`` of real numbers.
        num_envs: N.
        action_dim: A.

    Returns:
        ``(clipped float64 [N, A], clipped_mask bool [N])`` where the mask marks environments whose
        action had at least one dimension outside [-1, 1].

    Raises:
        TypeError: the actions are not a real-valued numeric array.
        ValueError: wrong shape, or NaN / infinite values (the message lists the offending envs).

    """
    array = np.asarray(actions)
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise TypeError(
            f"actions must be a real-valued numeric array of shape ({num_envs}, {action_dim}), "
            f"got dtype {array.dtype}"
        )
    if array.shape != (num_envs, action_dim):
        raise ValueError(
            f"actions must have shape (num_envs, action_dim) = ({num_envs}, {action_dim}), got {array.shape}"
        )
    array = array.astype(np.float64)
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite).tolist()
        raise ValueError(f"actions contain NaN or infinite values for envs {bad}; nothing was stepped")
    clipped_mask = (np.abs(array) > 1.0).any(axis=1)
    return np.clip(array, -1.0, 1.0), clipped_mask


@dataclass(frozen=True)
class ResetRequest:
    """The parsed ``options`` of a ``reset`` call: what each of the N environments starts from."""

    split: InitStateSplit
    tasks: tuple[str, ...] | None
    init_state_ids: np.ndarray | None


def parse_reset_options(
    options: dict[str, Any] | None, num_envs: int, known_tasks: Sequence[str]
) -> ResetRequest:
    """Validate ``reset`` options: ``split`` (train|eval), ``tasks`` (N names), ``init_state_ids`` (N ints).

    Unknown keys, unknown task names, a wrong count or a negative id raise `ValueError` naming the key.
    """
    options = dict(options or {})
    unknown = set(options) - {"split", "tasks", "init_state_ids"}
    if unknown:
        raise ValueError(
            f"unknown reset option(s) {sorted(unknown)}; valid options are 'split', 'tasks', 'init_state_ids'"
        )
    split_value = options.get("split", InitStateSplit.TRAIN)
    try:
        split = InitStateSplit(split_value)
    except ValueError:
        raise ValueError(f"reset option 'split' must be 'train' or 'eval', got {split_value!r}") from None
    tasks = options.get("tasks")
    if tasks is not None:
        if isinstance(tasks, str):
            tasks = [tasks] * num_envs
        tasks = tuple(tasks)
        if len(tasks) != num_envs:
            raise ValueError(
                f"reset option 'tasks' must name {num_envs} tasks (one per env), got {len(tasks)}"
            )
        unknown_tasks = sorted(set(tasks) - set(known_tasks))
        if unknown_tasks:
            raise ValueError(f"unknown task(s) {unknown_tasks}; known tasks: {sorted(known_tasks)}")
    ids = options.get("init_state_ids")
    if ids is not None:
        ids = np.asarray(ids)
        if ids.shape != (num_envs,) or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(
                f"reset option 'init_state_ids' must be {num_envs} integers (one per env), "
                f"got shape {ids.shape} and dtype {ids.dtype}"
            )
        if (ids < 0).any():
            raise ValueError("reset option 'init_state_ids' must be non-negative")
        ids = ids.astype(np.int64)
    return ResetRequest(split=split, tasks=tasks, init_state_ids=ids)


class BatchedEnv(VectorEnv, abc.ABC):
    """N environments in one object; see the module docstring for the full contract.

    Subclasses set, in ``__init__``: ``num_envs``, ``single_observation_space``,
    ``single_action_space``, ``observation_space``, ``action_space`` (gymnasium's batched spaces),
    ``metadata["autoreset_mode"]``, ``task_specs`` (every task this env can run, by name) and
    ``cameras`` (the camera names rendered into observations, possibly empty).

    Env classes registered in `sim.ENVS` also declare, as class attributes, ``TASK_NAMES`` (every task
    the class can run) and ``CAMERA_NAMES`` (every camera its scenes have), so that configs are
    validated without building an env; ``HAS_SCRIPTED_EXPERT`` says whether ``expert_action`` works.
    """

    TASK_NAMES: ClassVar[tuple[str, ...]]
    CAMERA_NAMES: ClassVar[tuple[str, ...]]
    HAS_SCRIPTED_EXPERT: ClassVar[bool] = True
    task_specs: dict[str, TaskSpec]
    cameras: tuple[str, ...]

    @property
    @abc.abstractmethod
    def tasks(self) -> tuple[str, ...]:
        """The task each of the N environments is running (names in ``task_specs``)."""

    @abc.abstractmethod
    def expert_action(self) -> np.ndarray:
        """Return the scripted expert's action for every environment's current state, float32 ``[N, A]``.

        Experts use privileged simulator state and keep a per-environment phase that restarts with each
        episode, so call this once per ``step``.
        """
