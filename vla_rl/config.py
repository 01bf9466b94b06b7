"""Structured config schemas for the Hydra entry points (`vla_rl.cli`).

Every group option has a dataclass schema stored in Hydra's ConfigStore; YAML files under `configs/`
hold values only. OmegaConf rejects unknown keys and wrongly typed values with a message naming the
key; `__post_init__` checks value ranges and choices (run by ``OmegaConf.to_object``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

SPLITS = ("train", "eval")


def _check_choice(key: str, value: str, choices: tuple[str, ...] | list[str]) -> None:
    if value not in choices:
        raise ValueError(f"{key}={value!r} is not valid; choose one of: {', '.join(choices)}")


def _check_positive(key: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{key} must be >= 1, got {value}")


@dataclass
class ArmEnvConfig:
    """The arm suite (`sim.mujoco.arm`).

    Attributes:
        name: env registry name.
        num_envs: environments stepped together (N).
        tasks: task names; empty means every task of the suite.
        cameras: cameras rendered into observations.
        image_size: square image side, pixels.
        num_threads: MuJoCo rollout threads; null means one per core.

    """

    name: str = "arm"
    num_envs: int = 16
    tasks: list[str] = field(default_factory=list)
    cameras: list[str] = field(default_factory=lambda: ["agentview", "wrist"])
    image_size: int = 128
    num_threads: int | None = None

    def __post_init__(self) -> None:
        from sim.mujoco.arm.env import CAMERAS
        from sim.mujoco.arm.tasks import ARM_TASKS

        _check_positive("env.num_envs", self.num_envs)
        for task in self.tasks:
            _check_choice("env.tasks", task, list(ARM_TASKS))
        for camera in self.cameras:
            _check_choice("env.cameras", camera, CAMERAS)
        if not 16 <= self.image_size <= 512:
            raise ValueError(f"env.image_size must be within [16, 512], got {self.image_size}")

    def task_names(self) -> list[str]:
        """The tasks to run: ``tasks`` or, when empty, every task of the suite."""
        from sim.mujoco.arm.tasks import ARM_TASKS

        return list(self.tasks) or list(ARM_TASKS)


@dataclass
class DemosConfig:
    """Scripted-expert demonstrations written as a LeRobotDataset (v3).

    Attributes:
        root: dataset directory; collected once, reused while it exists.
        repo_id: the dataset's LeRobot repo id (a name; nothing is uploaded).
        episodes_per_task: successful episodes to record per task.
        split: initial-state set the demonstrations start from (never ``eval`` for training data).
        use_videos: store cameras as AV1 videos (true) or PNG images (false).
        max_attempts_factor: give up on a task after this many attempts per wanted episode.

    """

    root: str = "data/demos/arm"
    repo_id: str = "vla_rl/arm_demos"
    episodes_per_task: int = 50
    split: str = "train"
    use_videos: bool = True
    max_attempts_factor: int = 2

    def __post_init__(self) -> None:
        _check_positive("demos.episodes_per_task", self.episodes_per_task)
        _check_positive("demos.max_attempts_factor", self.max_attempts_factor)
        _check_choice("demos.split", self.split, SPLITS)


@dataclass
class EvalConfig:
    """Evaluation on the ``eval`` initial states.

    Attributes:
        policy: what acts: ``expert`` (the scripted experts; a reference upper bound).
        episodes_per_task: eval initial states used per task (first k of the 50).
        videos: rollouts recorded as MP4 (the first ones of each task, up to this many in total).

    """

    policy: str = "expert"
    episodes_per_task: int = 50
    videos: int = 4

    def __post_init__(self) -> None:
        _check_choice("eval.policy", self.policy, ("expert",))
        if not 1 <= self.episodes_per_task <= 50:
            raise ValueError(f"eval.episodes_per_task must be within [1, 50], got {self.episodes_per_task}")
        if self.videos < 0:
            raise ValueError(f"eval.videos must be >= 0, got {self.videos}")


@dataclass
class CollectConfig:
    """`vla-rl-collect`: run the scripted experts and write demonstrations."""

    env: ArmEnvConfig = MISSING
    demos: DemosConfig = field(default_factory=DemosConfig)
    seed: int = 0
    overwrite: bool = False


@dataclass
class EvalRunConfig:
    """`vla-rl-eval`: evaluate a policy on the ``eval`` initial states and write a report."""

    env: ArmEnvConfig = MISSING
    eval: EvalConfig = field(default_factory=EvalConfig)
    run_dir: str = "runs/eval"
    seed: int = 0


@dataclass
class TrainConfig:
    """`vla-rl-train`: the whole pipeline, stage by stage, in one resumable run directory."""

    env: ArmEnvConfig = MISSING
    demos: DemosConfig = field(default_factory=DemosConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run_dir: str = "runs/default"
    seed: int = 0


def register_configs() -> None:
    """Store every schema in Hydra's ConfigStore (idempotent)."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    store.store(name="eval_schema", node=EvalRunConfig)
    store.store(name="collect_schema", node=CollectConfig)
    store.store(group="env", name="arm_schema", node=ArmEnvConfig)
