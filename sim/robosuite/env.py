"""robosuite's standard tasks (Lift, Stack, PickPlaceCan, Door) behind the batched env contract.

A Panda arm with robosuite's OSC_POSE controller at 20 Hz (LIBERO's action convention, see
`sim.robosuite.base`), sparse reward (1.0 on the step the task is solved, which terminates the episode),
robosuite's own success checks (``_check_success``).

| task | robosuite env | instruction | max steps |
|---|---|---|---|
| lift | Lift | lift the red cube | 300 |
| stack | Stack | stack the red cube on the green cube | 400 |
| pick_place_can | PickPlaceCan | put the can in its bin | 400 |
| door | Door | open the door | 300 |

Initial states: robosuite randomizes object placement (and adds small joint noise to the arm) at every
reset with numpy's global generator. Initial state ``i`` of a split is the state after a reset with numpy
seeded by ``SeedSequence([root, crc32(task), i])``, with a different root for ``train`` (500 states) and
``eval`` (50): deterministic, generated on demand, and disjoint (continuous draws; a test checks it).

Images are upright (robosuite has no published evaluation protocol to follow; LIBERO's 180-degree
rotation is LIBERO's). `RobosuiteEnv` runs N of these in worker processes and is registered as
``robosuite`` in `sim.ENVS`.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from sim.core import AutoresetMode, InitStateSplit, TaskSpec
from sim.robosuite.base import CAMERAS, RobosuiteBaseEnv, Slot, SuiteWorkers, set_gl_defaults

__all__ = ["ROBOSUITE_TASKS", "RobosuiteBatchedEnv", "RobosuiteEnv"]

ROBOSUITE_TASKS: dict[str, tuple[str, TaskSpec]] = {
    "lift": ("Lift", TaskSpec("lift", "lift the red cube", 300)),
    "stack": ("Stack", TaskSpec("stack", "stack the red cube on the green cube", 400)),
    "pick_place_can": ("PickPlaceCan", TaskSpec("pick_place_can", "put the can in its bin", 400)),
    "door": ("Door", TaskSpec("door", "open the door", 300)),
}
"""Our task name -> (robosuite environment name, task spec)."""
SEED_ROOTS = {InitStateSplit.TRAIN: 1_234_001, InitStateSplit.EVAL: 1_234_002}
DEFAULT_IMAGE_SIZE = 128


def state_seed(task: str, split: InitStateSplit, state_id: int) -> int:
    """The numpy seed of initial state ``state_id`` of ``split`` for ``task``."""
    sequence = np.random.SeedSequence([SEED_ROOTS[split], zlib.crc32(task.encode()), state_id])
    return int(sequence.generate_state(1)[0])


class RobosuiteBatchedEnv(RobosuiteBaseEnv):
    """k robosuite environments in this process (see the module docstring and `RobosuiteBaseEnv`).

    Args:
        num_envs: k.
        tasks: task names (``lift``, ``stack``, ``pick_place_can``, ``door``), round-robin; default all.
        cameras: ``agentview`` and/or ``wrist``; empty for none.
        image_size: returned image side (px).
        render_size: rendered image side before resizing (default: ``image_size``).
        fast_render: multisampling, reflections and shadows off.
        autoreset_mode: ``SameStep`` or ``Disabled``.

    """

    TASK_NAMES: ClassVar[tuple[str, ...]] = tuple(ROBOSUITE_TASKS)

    def __init__(
        self,
        num_envs: int = 1,
        tasks: Sequence[str] | None = None,
        cameras: Sequence[str] = tuple(CAMERAS),
        image_size: int = DEFAULT_IMAGE_SIZE,
        render_size: int | None = None,
        fast_render: bool = True,
        autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP,
    ) -> None:
        super().__init__(
            {name: spec for name, (_, spec) in ROBOSUITE_TASKS.items()},
            num_envs,
            tasks,
            cameras,
            image_size,
            render_size if render_size is not None else image_size,
            fast_render,
            autoreset_mode,
        )

    def make_sim_env(self, task: str) -> Any:
        """Build robosuite's environment for ``task`` (Panda, OSC_POSE, no camera observations)."""
        set_gl_defaults()
        import robosuite

        return robosuite.make(
            ROBOSUITE_TASKS[task][0],
            robots="Panda",
            controller_configs=robosuite.load_controller_config(default_controller="OSC_POSE"),
            has_renderer=False,
            has_offscreen_renderer=False,
            use_camera_obs=False,
            control_freq=20,
            horizon=100_000,
            ignore_done=True,
            hard_reset=False,
            reward_shaping=False,
        )

    def initial_state(self, slot: Slot, split: InitStateSplit, state_id: int) -> np.ndarray:
        """Reset with numpy's global generator seeded for (task, split, id); return the sim state."""
        saved = np.random.get_state()
        try:
            np.random.seed(state_seed(slot.task, split, state_id))
            slot.env.reset()
            return np.asarray(slot.env.sim.get_state().flatten(), np.float64)
        finally:
            np.random.set_state(saved)


class RobosuiteEnv(SuiteWorkers):
    """N = W * k robosuite environments in W worker processes (`sim.vector.ProcessVectorEnv`).

    Args:
        num_envs: N.
        tasks: task names assigned round-robin at the first ``reset`` (default: all four).
        cameras: ``agentview`` and/or ``wrist``.
        image_size: returned image side (px).
        render_size: rendered image side before resizing (default: ``image_size``).
        fast_render: multisampling, reflections and shadows off.
        num_workers: W (default: ``min(N, cpu count)``); must divide N.
        autoreset_mode: ``SameStep`` or ``Disabled``.
        step_timeout_s: a worker silent for longer is restarted (also bounds a ``reset`` that builds
            environments; default 60 s + 30 s per env of a worker).

    """

    TASK_NAMES: ClassVar[tuple[str, ...]] = tuple(ROBOSUITE_TASKS)
    CAMERA_NAMES: ClassVar[tuple[str, ...]] = tuple(CAMERAS)
    HAS_SCRIPTED_EXPERT: ClassVar[bool] = False

    def __init__(
        self,
        num_envs: int = 2,
        tasks: Sequence[str] | None = None,
        cameras: Sequence[str] = tuple(CAMERAS),
        image_size: int = DEFAULT_IMAGE_SIZE,
        render_size: int | None = None,
        fast_render: bool = True,
        num_workers: int | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP,
        step_timeout_s: float | None = None,
    ) -> None:
        super().__init__(
            RobosuiteBatchedEnv,
            num_envs,
            tasks,
            num_workers,
            step_timeout_s,
            suite="robosuite",
            cameras=cameras,
            image_size=image_size,
            render_size=render_size,
            fast_render=fast_render,
            autoreset_mode=autoreset_mode,
        )
