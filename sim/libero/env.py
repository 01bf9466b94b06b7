"""LIBERO suites behind the batched env contract, with OpenVLA's evaluation protocol.

Two layers:

- `LiberoBatchedEnv`: k LIBERO environments in this process, stepped one after another (one MuJoCo model,
  one LIBERO ``OffScreenRenderEnv`` and one off-screen renderer each). This is what one worker hosts.
- `LiberoEnv` and its per-suite subclasses (`LiberoSpatialEnv`, ...): N = W * k environments in W worker
  processes (`sim.vector.ProcessVectorEnv`: shared memory, a hung or dead worker is restarted without
  losing the other workers' episodes). These are what `sim.ENVS` registers as ``libero_spatial``,
  ``libero_object``, ``libero_goal``, ``libero_10`` and ``libero_90``.

Episode (OpenVLA's protocol, see `sim.libero.suites`): LIBERO's ``reset()``, ``set_init_state(state)``,
then 10 steps of ``[0, 0, 0, 0, 0, 0, -1]`` (objects settle; not counted, not returned), then at most
``MAX_STEPS[suite]`` policy steps (220 / 280 / 300 / 520 / 400 for spatial / object / goal / 10 / 90).
``terminated`` and ``info["success"]`` are LIBERO's ``done`` (the bddl goal holds); reward is 1.0 on that
step, else 0.

Initial states: ``eval`` = the task's 50 fixed states shipped in the ``libero`` package (the ones every
published LIBERO number uses). ``train`` = 500 states per task drawn by LIBERO's own placement samplers
(an env ``reset()``) after seeding numpy's global generator with ``SeedSequence([TRAIN_SEED, crc32(task),
state_id])``: deterministic, generated on demand (one LIBERO reset, ~0.1 s), never the eval states.

Observation and action as in `sim.robosuite.base` (LIBERO is built on robosuite), with LeRobot's keys:

- ``observation.state`` float32 ``[N, 8]``: end-effector position, axis-angle (robosuite's convention),
  gripper finger joints: the LeRobot / OpenVLA-OFT LIBERO state.
- ``observation.images.agentview`` (LIBERO's ``agentview`` camera) and ``observation.images.wrist``
  (``robot0_eye_in_hand``), uint8 ``[N, image_size, image_size, 3]``: rendered at ``render_size`` (256 in
  the protocol), rotated 180 degrees as OpenVLA does (``img[::-1, ::-1]`` of LIBERO's raw OpenGL-order
  frame), then resized to ``image_size`` (area interpolation) when the two differ. LeRobot's LIBERO
  datasets call these two cameras ``image`` and ``wrist_image``.
- ``task``: the instruction, as LIBERO's benchmark derives it from the task name.

Action: float ``[N, 7]`` in [-1, 1]: delta end-effector position (3) and rotation (3) for robosuite's
OSC_POSE controller (scaled by it to 5 cm and 0.5 rad), gripper (-1 open, +1 close).

Rendering (``fast_render=True``, the default): multisampling off (``offsamples = 0``), reflections and
shadows off (LIBERO's lights cast no shadows anyway). On this 2-core machine's software EGL a 256 px frame
costs ~90 ms instead of ~310 ms. Physics and success do not depend on it (a test replays a successful
trajectory both ways); frames differ by ~2 grey levels on average. ``fast_render=False`` renders
exactly as LIBERO does (bit-identical to its ``agentview_image``; checked by hand), which is what
policies trained on LIBERO's datasets have seen. Collision geoms are hidden, as in LIBERO. LIBERO's own
robosuite camera observations are turned off (``use_camera_obs=False``): we render only the cameras
asked for.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from sim.core import AutoresetMode, InitStateSplit
from sim.libero.install import ensure_libero_ready
from sim.libero.suites import (
    NOOP_ACTION,
    NUM_NOOP_STEPS,
    PROTOCOL_RENDER_SIZE,
    SUITES,
    bddl_path,
    load_eval_init_states,
    suite_task_specs,
    task_names,
)
from sim.robosuite.base import (
    CAMERAS,
    RobosuiteBaseEnv,
    Slot,
    SuiteWorkers,
    robosuite_axis_angle,
    set_gl_defaults,
)

__all__ = [
    "CAMERAS",
    "Libero10Env",
    "Libero90Env",
    "LiberoBatchedEnv",
    "LiberoEnv",
    "LiberoGoalEnv",
    "LiberoObjectEnv",
    "LiberoSpatialEnv",
    "robosuite_axis_angle",
]

TRAIN_SEED = 20_251_126
"""Root of the seeds of the generated ``train`` initial states (any value other than LIBERO's)."""


def train_state_seed(task: str, state_id: int) -> int:
    """The numpy seed from which LIBERO's sampler draws ``train`` initial state ``state_id`` of ``task``."""
    sequence = np.random.SeedSequence([TRAIN_SEED, zlib.crc32(task.encode()), state_id])
    return int(sequence.generate_state(1)[0])


class LiberoBatchedEnv(RobosuiteBaseEnv):
    """k environments of one LIBERO suite in this process (see the module docstring for the protocol).

    Args:
        suite: ``libero_spatial``, ``libero_object``, ``libero_goal``, ``libero_10`` or ``libero_90``.
        num_envs: k.
        tasks: task names, assigned to the envs round-robin (default: the suite's tasks in order). LIBERO
            envs are built at the first ``reset``; an env whose task changes at a ``reset`` builds a new one
            (5-15 s), so keep envs on one task for many episodes (evaluation does: it runs the tasks one
            after another).
        cameras: cameras rendered into observations (``agentview``, ``wrist``); empty for none.
        image_size: side of the returned square images (px).
        render_size: side of the rendered images before resizing (256 in the protocol).
        fast_render: multisampling and reflections off (see the module docstring).
        autoreset_mode: ``SameStep`` or ``Disabled`` (see `sim.core`).

    """

    def __init__(
        self,
        suite: str,
        num_envs: int = 1,
        tasks: Sequence[str] | None = None,
        cameras: Sequence[str] = tuple(CAMERAS),
        image_size: int = PROTOCOL_RENDER_SIZE,
        render_size: int = PROTOCOL_RENDER_SIZE,
        fast_render: bool = True,
        autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP,
    ) -> None:
        if suite not in SUITES:
            raise ValueError(f"unknown LIBERO suite {suite!r}; choose one of: {', '.join(SUITES)}")
        self.suite = suite
        super().__init__(
            suite_task_specs(suite),
            num_envs,
            tasks,
            cameras,
            image_size,
            render_size,
            fast_render,
            autoreset_mode,
        )

    @property
    def libero_envs(self) -> tuple[Any, ...]:
        """The built LIBERO ``OffScreenRenderEnv`` objects (privileged access, e.g. for scripted control)."""
        return self.sim_envs

    def _family(self) -> str:
        return self.suite

    def make_sim_env(self, task: str) -> Any:
        """LIBERO's ``OffScreenRenderEnv`` for ``task``, with robosuite's camera observations off."""
        set_gl_defaults()
        ensure_libero_ready()
        from libero.libero.envs import OffScreenRenderEnv

        return OffScreenRenderEnv(
            bddl_file_name=str(bddl_path(self.suite, task)),
            use_camera_obs=False,
            has_offscreen_renderer=False,
            hard_reset=False,
            camera_names=list(CAMERAS.values()),
        )

    def initial_state(self, slot: Slot, split: InitStateSplit, state_id: int) -> np.ndarray:
        """``eval``: the package's fixed state; ``train``: LIBERO's sampler after seeding numpy."""
        if split is InitStateSplit.EVAL:
            return load_eval_init_states(self.suite, slot.task)[state_id]
        saved = np.random.get_state()
        try:
            np.random.seed(train_state_seed(slot.task, state_id))
            slot.env.reset()
            return np.asarray(slot.env.get_sim_state(), np.float64)
        finally:
            np.random.set_state(saved)

    def start_episode(self, slot: Slot, state: np.ndarray) -> dict[str, Any]:
        """OpenVLA's episode start: reset, set the initial state, 10 no-op steps."""
        slot.env.reset()
        self.clear_gripper(slot)
        raw: dict[str, Any] = slot.env.set_init_state(state)
        for _ in range(NUM_NOOP_STEPS):
            raw, _, _, _ = slot.env.step(NOOP_ACTION)
        return raw

    def step_sim_env(self, slot: Slot, action: np.ndarray) -> tuple[dict[str, Any], bool]:
        """One LIBERO step; success is LIBERO's ``done`` (the bddl goal holds), as in OpenVLA's evaluation."""
        raw, _, done, _ = slot.env.step(action)
        return raw, bool(done)

    def orient(self, frame: np.ndarray) -> np.ndarray:
        """OpenVLA's ``img[::-1, ::-1]`` of LIBERO's bottom-up raw frame: the upright frame mirrored."""
        return frame[:, ::-1]


# ----------------------------------------------------------------------------------------------------------
# Process-parallel envs, one class per suite (what sim.ENVS registers)


class LiberoEnv(SuiteWorkers):
    """N = W * k environments of one LIBERO suite in W worker processes (`sim.vector.ProcessVectorEnv`).

    Each worker hosts a `LiberoBatchedEnv` of k = N / W environments with its own render contexts. Worker
    processes are spawned, so scripts that build this env need the ``if __name__ == "__main__":`` guard.

    Args:
        num_envs: N.
        tasks: task names, assigned to the N envs round-robin at the first ``reset`` (default: all).
        cameras: ``agentview`` and/or ``wrist``.
        image_size: returned image side (px).
        render_size: rendered image side before resizing (256 in the protocol).
        fast_render: multisampling and reflections off.
        num_workers: W (default: ``min(N, cpu count)``); must divide N.
        autoreset_mode: ``SameStep`` or ``Disabled``.
        step_timeout_s: a worker silent for longer is restarted; this also bounds a ``reset`` that builds
            LIBERO envs (5-30 s each on a loaded 2-core machine), so the default is 120 s + 60 s per env
            of a worker.
        start_timeout_s: how long a worker may take to start (LIBERO envs are built at the first reset).

    """

    SUITE: ClassVar[str]
    TASK_NAMES: ClassVar[tuple[str, ...]]
    CAMERA_NAMES: ClassVar[tuple[str, ...]] = tuple(CAMERAS)
    HAS_SCRIPTED_EXPERT: ClassVar[bool] = False
    BASE_TIMEOUT_S = 120.0
    PER_ENV_TIMEOUT_S = 60.0

    def __init__(
        self,
        num_envs: int = 2,
        tasks: Sequence[str] | None = None,
        cameras: Sequence[str] = tuple(CAMERAS),
        image_size: int = PROTOCOL_RENDER_SIZE,
        render_size: int = PROTOCOL_RENDER_SIZE,
        fast_render: bool = True,
        num_workers: int | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP,
        step_timeout_s: float | None = None,
        start_timeout_s: float = 300.0,
    ) -> None:
        super().__init__(
            functools.partial(LiberoBatchedEnv, self.SUITE),
            num_envs,
            tasks,
            num_workers,
            step_timeout_s,
            suite=self.SUITE,
            cameras=cameras,
            image_size=image_size,
            render_size=render_size,
            fast_render=fast_render,
            autoreset_mode=autoreset_mode,
            start_timeout_s=start_timeout_s,
        )


class LiberoSpatialEnv(LiberoEnv):
    """`LiberoEnv` over LIBERO-Spatial (10 tasks: one bowl onto the plate, the scenes differ in layout)."""

    SUITE = "libero_spatial"
    TASK_NAMES = task_names("libero_spatial")


class LiberoObjectEnv(LiberoEnv):
    """`LiberoEnv` over LIBERO-Object (10 tasks: one grocery item into the basket)."""

    SUITE = "libero_object"
    TASK_NAMES = task_names("libero_object")


class LiberoGoalEnv(LiberoEnv):
    """`LiberoEnv` over LIBERO-Goal (10 tasks with different goals in one scene)."""

    SUITE = "libero_goal"
    TASK_NAMES = task_names("libero_goal")


class Libero10Env(LiberoEnv):
    """`LiberoEnv` over LIBERO-10 (LIBERO-Long: 10 long-horizon tasks)."""

    SUITE = "libero_10"
    TASK_NAMES = task_names("libero_10")


class Libero90Env(LiberoEnv):
    """`LiberoEnv` over LIBERO-90 (90 short tasks in 20 scenes)."""

    SUITE = "libero_90"
    TASK_NAMES = task_names("libero_90")
