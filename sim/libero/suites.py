"""The LIBERO suites and OpenVLA's evaluation protocol, read from the installed package without importing it.

Everything here works without importing ``libero`` (which needs a config file, builds torch and robosuite
modules and takes seconds): task names come from the package's task map (parsed, not imported), the
instructions from the task names exactly as LIBERO's benchmark derives them, and the 50 evaluation initial
states per task from the package's ``*.pruned_init`` files through a restricted unpickler that only accepts
numpy arrays.

The protocol constants are those of OpenVLA's LIBERO evaluation (``experiments/robot/libero``), which
SimpleVLA-RL, SRPO, RLinf and VLA-RL follow: per episode, `NUM_NOOP_STEPS` steps of `NOOP_ACTION` to let
objects settle (not counted, not shown to the policy), then at most `MAX_STEPS` policy steps; success is the
env's ``done`` (LIBERO's goal predicate); images rendered at `PROTOCOL_RENDER_SIZE` px and rotated 180
degrees.
"""

from __future__ import annotations

import ast
import functools
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

from sim.core import TaskSpec
from sim.libero.install import libero_package_dir

__all__ = [
    "MAX_STEPS",
    "NOOP_ACTION",
    "NUM_EVAL_STATES",
    "NUM_NOOP_STEPS",
    "NUM_TRAIN_STATES",
    "PROTOCOL_RENDER_SIZE",
    "SUITES",
    "bddl_path",
    "instruction_of",
    "load_eval_init_states",
    "suite_task_specs",
    "task_names",
]

SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
MAX_STEPS = {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
}
"""Policy steps per episode (OpenVLA: the longest training demonstration of the suite, rounded up)."""
NUM_NOOP_STEPS = 10
NOOP_ACTION = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0])
"""No translation, no rotation, gripper open: what the first `NUM_NOOP_STEPS` steps of an episode send."""
PROTOCOL_RENDER_SIZE = 256
NUM_EVAL_STATES = 50
NUM_TRAIN_STATES = 500


def _check_suite(suite: str) -> None:
    if suite not in SUITES:
        raise ValueError(f"unknown LIBERO suite {suite!r}; choose one of: {', '.join(SUITES)}")


@functools.cache
def _task_map() -> dict[str, list[str]]:
    """LIBERO's ``libero_task_map`` (suite -> task names in benchmark order), parsed from its source."""
    path = libero_package_dir() / "benchmark" / "libero_suite_task_map.py"
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "libero_task_map" for target in node.targets
        ):
            value = ast.literal_eval(node.value)
            if isinstance(value, dict):
                return {str(suite): [str(name) for name in names] for suite, names in value.items()}
    raise RuntimeError(f"no libero_task_map dict in {path}")


def task_names(suite: str) -> tuple[str, ...]:
    """The tasks of ``suite`` in LIBERO's benchmark order (task id = index), e.g. 10 for libero_spatial."""
    _check_suite(suite)
    return tuple(_task_map()[suite])


def instruction_of(task: str) -> str:
    """The language instruction of a task, as LIBERO's benchmark derives it from the task name.

    ``pick_up_the_black_bowl_..._on_the_plate`` -> ``pick up the black bowl ... on the plate``; LIBERO-90/10
    names start with a scene prefix that is dropped (``KITCHEN_SCENE3_turn_on_the_stove`` -> ``turn on the
    stove``). This is the instruction OpenVLA-style evaluations give the policy (not the bddl's own
    ``:language`` line, which differs in places, e.g. "akita black bowl").
    """
    if task[:1].isupper():
        marker = task.find("SCENE")
        if marker < 0:
            raise ValueError(f"LIBERO task name {task!r} starts upper-case but has no SCENE<n>_ prefix")
        rest = task[marker + len("SCENE") :]
        task = rest[rest.index("_") + 1 :]
    return " ".join(task.split("_"))


def bddl_path(suite: str, task: str) -> Path:
    """The task's bddl file inside the installed ``libero`` package."""
    return libero_package_dir() / "bddl_files" / suite / f"{task}.bddl"


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else (LIBERO's init-state files are torch-saved numpy arrays)."""

    _ALLOWED: frozenset[tuple[str, str]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a LIBERO init-state file")
        if module.startswith("numpy") and name == "_reconstruct":
            return np._core.multiarray._reconstruct  # type: ignore[attr-defined]
        return super().find_class(module, name)


@functools.cache
def load_eval_init_states(suite: str, task: str) -> np.ndarray:
    """The task's fixed initial states shipped in ``libero``, float64 ``[50, S]`` (flattened sim states).

    These are the states every published LIBERO evaluation starts its 50 trials per task from.
    """
    if task not in task_names(suite):
        raise ValueError(f"unknown {suite} task {task!r}; known tasks: {', '.join(task_names(suite))}")
    path = libero_package_dir() / "init_files" / suite / f"{task}.pruned_init"
    with zipfile.ZipFile(path) as archive:
        (pickled,) = [name for name in archive.namelist() if name.endswith("data.pkl")]
        states = _NumpyOnlyUnpickler(io.BytesIO(archive.read(pickled))).load()
    if not isinstance(states, np.ndarray) or states.ndim != 2:
        raise ValueError(f"{path} does not hold a 2-D array of initial states")
    states = states.astype(np.float64)
    states.setflags(write=False)
    return states


def suite_task_specs(suite: str) -> dict[str, TaskSpec]:
    """`TaskSpec` of every task of ``suite``: instruction, OpenVLA's max steps, 500 train / 50 eval states."""
    return {
        name: TaskSpec(
            name=name,
            instruction=instruction_of(name),
            max_steps=MAX_STEPS[suite],
            num_train_states=NUM_TRAIN_STATES,
            num_eval_states=NUM_EVAL_STATES,
        )
        for name in task_names(suite)
    }
