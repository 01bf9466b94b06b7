"""`vla-rl-deploy`: run a trained policy on a real robot, through the safety layer, recording every episode.

Example: ``vla-rl-deploy robot=so101 robot.port=/dev/ttyACM0 robot.id=my_arm policy.path=runs/default/policy
task="pick up the red block and place it in the green zone" episodes=5``.

Each episode runs `real.deploy.DeployLoop` for ``control.episode_time_s``; between episodes the robot
holds while the scene is reset by hand (``reset_time_s``). Ctrl-C is an e-stop: the robot holds, the
episode is saved and the dataset finalized (a second Ctrl-C exits at once). When stdin is a terminal, one
press of ``q`` or space (``estop_keys``; no Enter needed) is an e-stop too, with the same outcome. Writes
the dataset to ``dataset.root`` and ``report.{json,md}`` (timing, safety interventions, bus errors) to
``run_dir``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
import numpy as np
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from real.arm.config_so101 import So101Config
from real.deploy import (
    ChunkPolicy,
    ControlConfig,
    DatasetConfig,
    DeployLoop,
    EpisodeRecorder,
    EpisodeResult,
    summarize_run,
)
from real.keyboard import DEFAULT_KEYS, KeyEstop, describe_keys
from vla_rl.cli import CONFIG_DIR, log, to_config
from vla_rl.io import write_json_atomic, write_text_atomic

if TYPE_CHECKING:
    from real.robot import Platform
    from vla_rl.policy.modeling_vla import VLAPolicy


@dataclass
class DeployPolicyConfig:
    """The policy that acts.

    Attributes:
        path: a directory written by ``save_pretrained`` (e.g. ``runs/default/policy``).
        temperature: sampling temperature; 0 is greedy.
        num_threads: torch threads for inference (leaves the other cores to the loop and drivers).
        device: ``cpu`` or ``cuda``.

    """

    path: str = MISSING
    temperature: float = 0.0
    num_threads: int = 1
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"policy.temperature must be >= 0, got {self.temperature}")
        if self.num_threads < 1:
            raise ValueError(f"policy.num_threads must be >= 1, got {self.num_threads}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"policy.device={self.device!r} is not valid; choose one of: cpu, cuda")


@dataclass
class DeployRunConfig:
    """`vla-rl-deploy`: episodes of a policy on a robot, recorded.

    Attributes:
        robot: the robot (group ``robot``: its port, calibration, cameras and safety limits).
        policy: the policy.
        task: the language instruction.
        episodes: episodes to run.
        estop_keys: keys that e-stop the robot when stdin is a terminal, one character each (default q
            and space); empty for none.
        reset_time_s: pause between episodes for resetting the scene.
        control: the control loop.
        dataset: the recording.
        run_dir: where the report goes.

    """

    robot: So101Config = MISSING
    policy: DeployPolicyConfig = field(default_factory=DeployPolicyConfig)
    task: str = MISSING
    episodes: int = 1
    estop_keys: str = DEFAULT_KEYS
    reset_time_s: float = 10.0
    control: ControlConfig = field(default_factory=ControlConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    run_dir: str = "runs/deploy"

    def __post_init__(self) -> None:
        if not self.task.strip():
            raise ValueError('task must be the instruction, e.g. task="pick up the red block"')
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")
        if not all(key.isprintable() for key in self.estop_keys):
            raise ValueError(f"estop_keys must be printable characters (e.g. 'q '), got {self.estop_keys!r}")
        if not (math.isfinite(self.reset_time_s) and self.reset_time_s >= 0):
            raise ValueError(f"reset_time_s must be >= 0, got {self.reset_time_s}")


def register_configs() -> None:
    """Store the deploy schema and the robot group's schemas in Hydra's ConfigStore (idempotent)."""
    store = ConfigStore.instance()
    store.store(name="deploy_schema", node=DeployRunConfig)
    store.store(group="robot", name="so101_schema", node=So101Config)


register_configs()


def load_policy(config: DeployPolicyConfig, platform: Platform, cameras: list[str]) -> VLAPolicy:
    """Load the policy and check that it fits the robot: its action and state sizes, and its cameras.

    Raises:
        ValueError: the policy does not fit (the message says how), or its files are invalid.
        FileNotFoundError: no policy at ``config.path``.

    """
    import torch

    from vla_rl.policy.modeling_vla import VLAPolicy

    if not config.path:
        raise ValueError("policy.path must be set to a directory written by save_pretrained")
    torch.set_num_threads(config.num_threads)
    policy = VLAPolicy.from_pretrained(config.path, map_location=config.device).eval()
    vla = policy.config
    actions, states = platform.action_names, platform.state_names
    if vla.action_dim != len(actions) or vla.state_dim != len(states):
        raise ValueError(
            f"policy {config.path} has action_dim {vla.action_dim} and state_dim {vla.state_dim}; the robot "
            f"needs actions ({', '.join(actions)}) and states ({', '.join(states)}); check robot.action_mode "
            "against the policy's training env"
        )
    missing = sorted(set(vla.cameras) - set(cameras))
    if missing:
        raise ValueError(f"policy {config.path} needs camera(s) {missing}; the robot has {sorted(cameras)}")
    return policy


def fit_control(control: ControlConfig, chunk_size: int) -> ControlConfig:
    """``control`` with ``replan_every`` at most ``chunk_size - 1``.

    A chunk comes back at least one tick after its observation, so re-planning every K ticks would leave
    the robot holding for a tick out of every K.
    """
    limit = max(1, chunk_size - 1)
    if control.replan_every <= limit:
        return control
    log.warning(
        "control.replan_every=%d lowered to %d (chunk size %d)", control.replan_every, limit, chunk_size
    )
    return dataclasses.replace(control, replan_every=limit)


def check_image_size(control: ControlConfig, policy: VLAPolicy) -> None:
    """Warn when ``control.image_size`` is not the policy's: its images would differ from its training's.

    Frames are cropped and resized to ``control.image_size`` and the policy resizes them again to its own
    size; a policy trained on frames rendered at its own size sees the same pixels only when both agree.
    """
    if control.image_size != policy.config.image_size:
        log.warning(
            "control.image_size=%d, but the policy takes %d px images (set control.image_size=%d to give it "
            "frames as it was trained on)",
            control.image_size,
            policy.config.image_size,
            policy.config.image_size,
        )


def chunk_policy(policy: VLAPolicy, temperature: float) -> ChunkPolicy:
    """The policy as the control loop calls it: a batch of one observation -> its chunk ``[K, A]``."""

    def act(observation: dict[str, Any]) -> np.ndarray:
        actions, _, _ = policy.act(observation, temperature)
        return actions[0].numpy()

    return act


def write_run_report(run_dir: Path, title: str, report: dict[str, Any], lines: list[str]) -> None:
    """``report.json`` (everything) and ``report.md`` (``lines``), written atomically."""
    write_json_atomic(run_dir / "report.json", report)
    write_text_atomic(run_dir / "report.md", "\n".join([f"# {title}", "", *lines]) + "\n")


def timing_lines(summary: dict[str, Any]) -> list[str]:
    """Markdown table rows of a `summarize_run` timing summary."""

    def cell(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f}"

    lines = ["| timing | n | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|"]
    for key in ("loop_jitter", "inference_latency", "frame_to_command_latency"):
        stats = summary[key]
        lines.append(
            f"| {key.replace('_', ' ')} | {stats['n']} | {cell(stats['p50_ms'])} | {cell(stats['p99_ms'])} "
            f"| {cell(stats['max_ms'])} |"
        )
    return lines


def incident_lines(summary: dict[str, Any]) -> list[str]:
    """Markdown lines on the safety interventions, bus and camera errors and stops of a run."""
    interventions = summary["safety_interventions"]
    return [
        "Safety interventions: "
        + (", ".join(f"{k} {v}" for k, v in sorted(interventions.items())) or "none"),
        "",
        f"Bus errors: {summary['bus_errors']} (serial input buffer reset after "
        f"{summary['input_buffer_resets']}); stale replies dropped before {summary['stale_input_flushes']} "
        f"reads; camera errors: {summary['camera_errors']}; "
        f"policy underruns: {summary['policy_underruns']}; overruns: {summary['overruns']}.",
        "",
        "Stops: " + ("; ".join(summary["stops"]) or "none") + ".",
    ]


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="deploy")
def main(cfg: DictConfig) -> None:
    """Deploy and report."""
    from real.cameras import CameraError, OpenCVCamera
    from real.deploy import dataset_features
    from real.robot import ROBOTS

    config = to_config(cfg, DeployRunConfig)
    if not config.robot.cameras:
        sys.exit("error: robot.cameras is empty; name each camera's source, e.g. robot.cameras.front=0")
    try:
        cameras = {
            name: OpenCVCamera(source, name, max_age_s=config.control.camera_max_age_s)
            for name, source in config.robot.cameras.items()
        }
        platform = ROBOTS.get(config.robot.name)(config.robot)
        policy = load_policy(config.policy, platform, list(cameras))
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    check_image_size(config.control, policy)
    try:
        platform.connect()
        for camera in cameras.values():
            camera.connect()
    except (ConnectionError, CameraError, RuntimeError) as error:
        for camera in cameras.values():
            camera.disconnect()
        platform.disconnect()
        sys.exit(f"error: {error}")
    features = dataset_features(
        platform, list(cameras), config.control.image_size, config.dataset.use_videos, with_success=False
    )
    recorder = EpisodeRecorder(config.dataset, config.control.fps, features, robot_type=config.robot.name)
    keys: KeyEstop | None = None

    def hard_exit(status: int) -> None:
        if keys is not None:
            keys.stop()  # give the terminal back its settings first
        os._exit(status)

    act = chunk_policy(policy, config.policy.temperature)
    loop = DeployLoop(platform, cameras, act, config.control, recorder, hard_exit)
    results: list[EpisodeResult] = []
    if threading.current_thread() is threading.main_thread():
        loop.safety.install_signal_handlers((signal.SIGINT, signal.SIGTERM))
    if config.estop_keys:
        keys = KeyEstop(loop.safety.estop, config.estop_keys)
        if keys.start():
            log.info("e-stop: press %s (or Ctrl-C)", describe_keys(config.estop_keys))
    try:
        for index in range(config.episodes):
            log.info("episode %d/%d: %s", index + 1, config.episodes, config.task)
            result = loop.run_episode(config.task)
            results.append(result)
            if result.stop_reason is not None:
                log.error("stopped (%s); ending the run", result.stop_reason)
                break
            if index + 1 < config.episodes:
                log.info("reset the scene: next episode in %.0f s (Ctrl-C to end)", config.reset_time_s)
                if _estopped_within(loop, config.reset_time_s):
                    break
    finally:
        if keys is not None:
            keys.stop()
        loop.safety.restore_signal_handlers()
        loop.close()
        for camera in cameras.values():
            camera.disconnect()
        platform.disconnect()
        root = recorder.finalize()
    summary = summarize_run(results)
    report = {"robot": config.robot.name, "task": config.task, "dataset": str(root), **summary}
    report["episode_results"] = [result.as_dict() for result in results]
    lines = [
        f"Task: {config.task}",
        f"Episodes: {len(results)}; dataset: `{root}`",
        "",
        *timing_lines(summary),
        "",
        *incident_lines(summary),
    ]
    write_run_report(Path(config.run_dir), f"Deployment on {config.robot.name}", report, lines)
    log.info("dataset: %s; report: %s", root, Path(config.run_dir) / "report.md")


def _estopped_within(loop: DeployLoop, seconds: float) -> bool:
    """Wait ``seconds`` (the scene reset); True as soon as an e-stop comes."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not loop.estopped:
        time.sleep(0.1)
    return loop.estopped


if __name__ == "__main__":
    main()
