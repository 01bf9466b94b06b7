"""Structured config schemas for the Hydra entry points (`vla_rl.cli`).

Every group option has a dataclass schema stored in Hydra's ConfigStore; YAML files under `configs/`
hold values only. OmegaConf rejects unknown keys and wrongly typed values with a message naming the
key; `__post_init__` checks value ranges and choices (run by ``OmegaConf.to_object``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from vla_rl.algos.grpo import GRPOConfig
from vla_rl.algos.sft import SFTConfig
from vla_rl.rewards.srpo import SRPORewardConfig
from vla_rl.world_model.jepa import WorldModelConfig
from vla_rl.world_model.training import WorldModelTrainConfig

SPLITS = ("train", "eval")


def _check_choice(key: str, value: str, choices: tuple[str, ...] | list[str]) -> None:
    if value not in choices:
        raise ValueError(f"{key}={value!r} is not valid; choose one of: {', '.join(choices)}")


def _check_positive(key: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{key} must be >= 1, got {value}")


@dataclass
class EnvConfig:
    """A batched env from the `sim.ENVS` registry; the fields every env family shares.

    Attributes:
        name: env registry name (``arm``, ``so101``, ...).
        num_envs: environments stepped together (N).
        tasks: task names; empty means every task the env class has.
        cameras: cameras rendered into observations (the first one is what videos and, by default,
            the world model see).
        image_size: square image side, pixels.

    """

    name: str = MISSING
    num_envs: int = 16
    tasks: list[str] = field(default_factory=list)
    cameras: list[str] = field(default_factory=list)
    image_size: int = 128

    def __post_init__(self) -> None:
        import sim

        _check_choice("env.name", self.name, sim.ENVS.names())
        env_class = sim.ENVS.get(self.name)
        _check_positive("env.num_envs", self.num_envs)
        for task in self.tasks:
            _check_choice("env.tasks", task, env_class.TASK_NAMES)
        for camera in self.cameras:
            _check_choice("env.cameras", camera, env_class.CAMERA_NAMES)
        if not 16 <= self.image_size <= 512:
            raise ValueError(f"env.image_size must be within [16, 512], got {self.image_size}")

    def task_names(self) -> list[str]:
        """The tasks to run: ``tasks`` or, when empty, every task of the env class."""
        import sim

        return list(self.tasks) or list(sim.ENVS.get(self.name).TASK_NAMES)

    def env_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the env class's constructor (besides ``autoreset_mode``)."""
        return {
            "num_envs": self.num_envs,
            "tasks": self.task_names(),
            "cameras": tuple(self.cameras),
            "image_size": self.image_size,
        }


@dataclass
class MujocoEnvConfig(EnvConfig):
    """Our MuJoCo suites (`sim.mujoco`: ``arm``, ``so101``), stepped by MuJoCo's thread pool.

    Attributes:
        num_threads: MuJoCo rollout threads; null means one per core.
        render_workers: render processes; null means one per core from 4 envs (else in-process), 0
            renders in-process. Set it when several runs share a many-core machine.

    """

    num_threads: int | None = None
    render_workers: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_threads is not None:
            _check_positive("env.num_threads", self.num_threads)
        if self.render_workers is not None and self.render_workers < 0:
            raise ValueError(
                f"env.render_workers must be >= 0 (0: render in-process), got {self.render_workers}"
            )

    def env_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the env class's constructor (besides ``autoreset_mode``)."""
        return {
            **super().env_kwargs(),
            "num_threads": self.num_threads,
            "render_workers": self.render_workers,
        }


@dataclass
class So101EnvConfig(MujocoEnvConfig):
    """The SO-101 table (`sim.mujoco.so101`).

    Attributes:
        action_mode: ``joint`` (6-D absolute joint targets) or ``ee`` (7-D TCP twist + gripper target);
            deploy and HIL the policy with the same ``robot.action_mode``.

    """

    action_mode: str = "joint"

    def __post_init__(self) -> None:
        from sim.mujoco.so101.env import ActionMode

        super().__post_init__()
        _check_choice("env.action_mode", self.action_mode, list(ActionMode))

    def env_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the env class's constructor (besides ``autoreset_mode``)."""
        return {**super().env_kwargs(), "action_mode": self.action_mode}


@dataclass
class RobosuiteEnvConfig(EnvConfig):
    """robosuite-based envs (`sim.robosuite`; LIBERO is built on robosuite), in worker processes.

    Attributes:
        render_size: rendered image side before resizing to ``image_size``.
        fast_render: multisampling and reflections off (about 3.5x cheaper frames on a CPU); false renders
            exactly as robosuite / LIBERO do, as policies trained on LIBERO's own datasets expect.
        num_workers: worker processes (each with its own render contexts); null means
            min(num_envs, cores). Must divide num_envs.

    """

    render_size: int = 128
    fast_render: bool = True
    num_workers: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 16 <= self.render_size <= 1024:
            raise ValueError(f"env.render_size must be within [16, 1024], got {self.render_size}")
        if self.num_workers is not None and (self.num_workers < 1 or self.num_envs % self.num_workers):
            raise ValueError(
                f"env.num_workers={self.num_workers} must be >= 1 and divide env.num_envs={self.num_envs}"
            )

    def env_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the env class's constructor (besides ``autoreset_mode``)."""
        return {
            **super().env_kwargs(),
            "render_size": self.render_size,
            "fast_render": self.fast_render,
            "num_workers": self.num_workers,
        }


@dataclass
class LiberoEnvConfig(RobosuiteEnvConfig):
    """LIBERO suites (`sim.libero`), with OpenVLA's protocol: ``render_size`` 256, resized to ``image_size``.

    Names: ``libero_spatial``, ``libero_object``, ``libero_goal``, ``libero_10``, ``libero_90``.
    """

    render_size: int = 256


@dataclass
class DemosConfig:
    """Scripted-expert demonstrations written as a LeRobotDataset (v3).

    Attributes:
        root: dataset directory; collected once, reused while it exists.
        repo_id: the dataset's LeRobot repo id (a name; nothing is uploaded).
        episodes_per_task: successful episodes to record per task.
        split: initial-state set the demonstrations start from (never ``eval`` for training data).
        use_videos: store cameras as AV1 videos (true) or PNG images (false: ~1.7x faster to load
            for training on a CPU).
        max_attempts_factor: give up on a task after this many attempts per wanted episode.
        action_noise: standard deviation of Gaussian noise added to the expert's actions as executed
            (action units); the recorded actions stay the expert's own (DART: the demonstrations show
            how the expert recovers from small errors). 0 records the expert's own path.

    """

    root: str = "data/demos/${env.name}"
    repo_id: str = "vla_rl/${env.name}_demos"
    episodes_per_task: int = 50
    split: str = "train"
    use_videos: bool = False
    max_attempts_factor: int = 2
    action_noise: float = 0.0

    def __post_init__(self) -> None:
        _check_positive("demos.episodes_per_task", self.episodes_per_task)
        if not 0.0 <= self.action_noise <= 1.0:
            raise ValueError(
                f"demos.action_noise must be within [0, 1] (action units), got {self.action_noise}"
            )
        _check_positive("demos.max_attempts_factor", self.max_attempts_factor)
        _check_choice("demos.split", self.split, SPLITS)


@dataclass
class EvalConfig:
    """Evaluation on the ``eval`` initial states.

    Attributes:
        policy: what acts: ``expert`` (the scripted experts; a reference upper bound) or ``policy``
            (a saved VLA policy at ``policy.path``).
        episodes_per_task: eval initial states used per task (first k of the 50).
        videos: rollouts recorded as MP4 (the first ones of each task, up to this many in total).
        temperature: the policy's decoding: 0 is greedy (each action token's most likely bin), > 0
            samples at that temperature (the policy GRPO trains is the one sampled at `rl.temperature`).
        seed: the sampling's random numbers when ``temperature`` > 0 (every evaluation draws the same).

    """

    policy: str = "expert"
    episodes_per_task: int = 50
    videos: int = 4
    temperature: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        _check_choice("eval.policy", self.policy, ("expert", "policy"))
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"eval.temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if self.seed < 0:
            raise ValueError(f"eval.seed must be >= 0, got {self.seed}")
        if not 1 <= self.episodes_per_task <= 50:
            raise ValueError(f"eval.episodes_per_task must be within [1, 50], got {self.episodes_per_task}")
        if self.videos < 0:
            raise ValueError(f"eval.videos must be >= 0, got {self.videos}")


@dataclass
class PolicyConfig:
    """The VLA policy's architecture (its data-dependent sizes and statistics come from the dataset).

    Attributes:
        backbone: ``tiny`` (from scratch), ``small`` (packaged pretrained encoders), ``hf`` (local
            `transformers` model at ``backbone_path``).
        backbone_path: directory of the ``hf`` backbone.
        freeze_backbone: keep pretrained encoders fixed.
        chunk_size: K, actions predicted per forward pass.
        execute_steps: actions of each chunk executed before re-planning (null: all K).
        image_size: model input size, pixels.
        image_token_grid: G x G image tokens per camera for the pretrained backbones.
        keypoints_per_camera: spatial-softmax keypoint tokens per camera (``tiny`` backbone).
        hidden_dim: decoder width.
        num_layers: decoder blocks.
        num_heads: attention heads.
        dropout: decoder dropout.
        decoding: ``parallel`` or ``autoregressive``.
        value_head: add a value head (PPO).
        use_state: feed the proprioceptive state to the model (`VLAConfig.use_state`).
        path: start from this saved policy instead of a new one.

    """

    backbone: str = "tiny"
    backbone_path: str | None = None
    freeze_backbone: bool = True
    chunk_size: int = 8
    execute_steps: int | None = None
    image_size: int = 64
    image_token_grid: int = 2
    keypoints_per_camera: int = 16
    hidden_dim: int = 128
    num_layers: int = 3
    num_heads: int = 4
    dropout: float = 0.0
    decoding: str = "parallel"
    value_head: bool = False
    use_state: bool = True
    path: str | None = None

    def __post_init__(self) -> None:
        _check_choice("policy.backbone", self.backbone, ("tiny", "small", "hf"))
        _check_choice("policy.decoding", self.decoding, ("parallel", "autoregressive"))
        _check_positive("policy.chunk_size", self.chunk_size)
        if self.execute_steps is not None and not 1 <= self.execute_steps <= self.chunk_size:
            raise ValueError(f"policy.execute_steps must be within [1, chunk_size], got {self.execute_steps}")


@dataclass
class CollectConfig:
    """`vla-rl-collect`: run the scripted experts and write demonstrations."""

    env: EnvConfig = MISSING
    demos: DemosConfig = field(default_factory=DemosConfig)
    seed: int = 0
    overwrite: bool = False


@dataclass
class EvalRunConfig:
    """`vla-rl-eval`: evaluate a policy on the ``eval`` initial states and write a report.

    ``eval.policy=policy`` evaluates the saved policy at ``policy.path`` (``policy.execute_steps`` applies).
    """

    env: EnvConfig = MISSING
    eval: EvalConfig = field(default_factory=EvalConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    run_dir: str = "runs/eval"
    seed: int = 0


@dataclass
class WorldModelStageConfig:
    """The world model behind the ``srpo`` reward.

    Attributes:
        kind: ``jepa`` (in-house; trained on the demonstrations' videos unless ``path`` is set) or
            ``vjepa2`` (a V-JEPA 2 `transformers` checkpoint in the local directory ``path``).
        path: a saved in-house world model or a V-JEPA 2 directory; null trains a ``jepa`` one.
        camera: the camera whose frames it embeds; null: the env's first camera.
        policy_rollouts: rollouts of the SFT policy per task (temperature 1, the first ``train``
            initial states) whose videos are added to the demonstrations' for training a ``jepa`` one:
            the demonstrations only ever succeed, the policy's failures show the latent what a missed
            task looks like. 0: the demonstrations alone.
        model: architecture of the in-house model.
        train: its training settings.

    """

    kind: str = "jepa"
    path: str | None = None
    camera: str | None = None
    policy_rollouts: int = 0
    model: WorldModelConfig = field(default_factory=WorldModelConfig)
    train: WorldModelTrainConfig = field(default_factory=WorldModelTrainConfig)

    def __post_init__(self) -> None:
        _check_choice("world_model.kind", self.kind, ("jepa", "vjepa2"))
        if self.policy_rollouts < 0:
            raise ValueError(f"world_model.policy_rollouts must be >= 0, got {self.policy_rollouts}")
        if self.kind == "vjepa2" and not self.path:
            raise ValueError("world_model.kind=vjepa2 needs world_model.path=<local V-JEPA 2 directory>")


@dataclass
class RewardConfig:
    """The RL reward.

    Attributes:
        name: ``binary`` (1 on success), ``srpo`` (world-model latent progress for failures) or
            ``pixel`` (the same progress on downsampled raw frames: the baseline the world model must beat).
        srpo: constants of the ``srpo`` and ``pixel`` rewards.

    """

    name: str = "srpo"
    srpo: SRPORewardConfig = field(default_factory=SRPORewardConfig)

    def __post_init__(self) -> None:
        _check_choice("reward.name", self.name, ("binary", "srpo", "pixel"))


@dataclass
class TrainConfig:
    """`vla-rl-train`: the whole pipeline, stage by stage, in one resumable run directory.

    ``seed`` seeds the env resets and the initial weights of the policy and the world model;
    ``configs/train.yaml`` also passes it on as ``sft.seed``, ``world_model.train.seed`` and ``rl.seed``,
    so ``seed=1`` reruns the whole pipeline with other random numbers.
    """

    env: EnvConfig = MISSING
    demos: DemosConfig = field(default_factory=DemosConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    world_model: WorldModelStageConfig = field(default_factory=WorldModelStageConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    rl: GRPOConfig = field(default_factory=GRPOConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run_dir: str = "runs/default"
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.env.cameras:
            raise ValueError("vla-rl-train needs images: env.cameras is empty")
        if self.world_model_camera() not in self.env.cameras:
            raise ValueError(
                f"world_model.camera={self.world_model.camera!r} is not rendered; env.cameras is "
                f"{list(self.env.cameras)}"
            )

    def world_model_camera(self) -> str:
        """The camera the world model embeds: ``world_model.camera`` or the env's first camera."""
        return self.world_model.camera or self.env.cameras[0]


def register_configs() -> None:
    """Store every schema in Hydra's ConfigStore (idempotent)."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    store.store(name="eval_schema", node=EvalRunConfig)
    store.store(name="collect_schema", node=CollectConfig)
    store.store(group="env", name="mujoco_schema", node=MujocoEnvConfig)
    store.store(group="env", name="so101_schema", node=So101EnvConfig)
    store.store(group="env", name="libero_schema", node=LiberoEnvConfig)
    store.store(group="env", name="robosuite_schema", node=RobosuiteEnvConfig)
