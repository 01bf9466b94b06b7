"""`vla-rl-hil`: the unchanged deployment stack against emulated hardware, with faults; next to pure sim.

Example: ``vla-rl-hil robot=so101 policy.path=runs/default/policy episodes=10 faults.latency_s=0.01``.

It starts the Feetech servo-bus emulator (`sim.emulators.feetech`, a pseudo-terminal) and the MJPEG camera
server (`sim.emulators.camera_server`, loopback HTTP), points the robot config at them (port,
calibration, camera URLs; every other ``robot.*`` value is used as given), and runs `real.deploy` with
LeRobot's ``SO101Follower`` exactly as on hardware. Before each episode the emulated table is put in
the task's ``eval`` initial state ``k`` (as a person resets a real table); success is read from the
emulator's physics. Bus faults (``faults.latency_s``, ``drop_rate``, ``corrupt_rate``) apply to every
scored episode; with ``faults.camera_dropout_s`` set, one more episode (not scored) has the camera server
withhold every frame from that many seconds in for ``faults.camera_dropout_duration_s`` (the stack must
hold, count the blind ticks and resume from fresh frames); with ``faults.link_cut_s`` set, one more
episode (not scored) cuts the bus link that many seconds in, measures how long the watchdog takes to stop
the robot, then restores the link.

The same policy is evaluated in pure simulation (`sim.mujoco.so101.env`) on the same initial states.
Writes ``report.{json,md}`` (success in HIL and in sim, loop jitter, inference and frame-to-command
latency, safety interventions, each fault and how it was handled, the watchdog stop time) and the
recorded dataset to ``run_dir``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from real.arm.config_so101 import So101Config
from real.deploy import (
    ControlConfig,
    DatasetConfig,
    DeployLoop,
    EpisodeRecorder,
    EpisodeResult,
    summarize_run,
)
from vla_rl.cli import CONFIG_DIR, log, to_config
from vla_rl.cli.deploy import (
    DeployPolicyConfig,
    check_image_size,
    chunk_policy,
    fit_control,
    incident_lines,
    load_policy,
    timing_lines,
    write_run_report,
)

if TYPE_CHECKING:
    from real.robot import Platform
    from sim.emulators.camera_server import MjpegCameraServer
    from sim.emulators.feetech import FeetechBusEmulator
    from vla_rl.policy.modeling_vla import VLAPolicy

LINK_CUT_BOUND_PERIODS = 2.0  # the watchdog must stop the robot within this many control periods
CONNECT_ATTEMPTS = 3


@dataclass
class FaultsConfig:
    """Faults the emulated hardware injects.

    Attributes:
        latency_s: delay of every servo reply, scored episodes.
        drop_rate: probability that a servo reply is lost, scored episodes.
        corrupt_rate: probability that a servo reply has a wrong checksum, scored episodes.
        link_cut_s: run one more episode and cut the bus link (every servo silent) this many seconds
            in; null for none.
        camera_dropout_s: run one more episode in which the camera server stops sending frames (the
            connections stay open, as a hung camera's) this many seconds in; null for none.
        camera_dropout_duration_s: how long that dropout lasts.

    """

    latency_s: float = 0.0
    drop_rate: float = 0.0
    corrupt_rate: float = 0.0
    link_cut_s: float | None = 1.0
    camera_dropout_s: float | None = None
    camera_dropout_duration_s: float = 1.0

    def __post_init__(self) -> None:
        from sim.emulators.feetech import BusFaults

        try:
            BusFaults(self.latency_s, self.drop_rate, self.corrupt_rate)
        except ValueError as error:
            raise ValueError(f"faults: {error}") from None
        for name in ("link_cut_s", "camera_dropout_s"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"faults.{name} must be > 0 or null, got {value}")
        duration = self.camera_dropout_duration_s
        if not (math.isfinite(duration) and duration > 0):
            raise ValueError(f"faults.camera_dropout_duration_s must be > 0, got {duration}")


@dataclass
class HilCamerasConfig:
    """The emulated cameras (frames are ``control.image_size`` square, as the sim env renders them).

    Attributes:
        fps: frames per second of each camera.
        jpeg_quality: JPEG quality of the stream, 1..100.

    """

    fps: float = 30.0
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        if not (math.isfinite(self.fps) and 0 < self.fps <= 120):
            raise ValueError(f"cameras.fps must be within (0, 120], got {self.fps}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"cameras.jpeg_quality must be within [1, 100], got {self.jpeg_quality}")


@dataclass
class HilRunConfig:
    """`vla-rl-hil`: episodes on emulated hardware, faults, and the same policy in pure sim.

    Attributes:
        robot: the robot config (its port, calibration and cameras are replaced by the emulators').
        policy: the policy.
        task: the so101 task (its instruction, initial states and success check).
        episodes: scored episodes, from the task's eval initial states 0..episodes-1.
        control: the control loop.
        faults: injected faults.
        cameras: the emulated cameras.
        dataset: the recording.
        sim_eval: also evaluate the policy in the so101 sim env on the same initial states.
        run_dir: where the report goes.

    """

    robot: So101Config = MISSING
    policy: DeployPolicyConfig = field(default_factory=DeployPolicyConfig)
    task: str = "pick_place"
    episodes: int = 5
    control: ControlConfig = field(default_factory=ControlConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)
    cameras: HilCamerasConfig = field(default_factory=HilCamerasConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    sim_eval: bool = True
    run_dir: str = "runs/hil"

    def __post_init__(self) -> None:
        from sim.mujoco.so101.tasks import SO101_TASKS

        if self.task not in SO101_TASKS:
            raise ValueError(f"task={self.task!r} is not valid; choose one of: {', '.join(SO101_TASKS)}")
        eval_states = SO101_TASKS[self.task].spec.num_eval_states
        if not 1 <= self.episodes <= eval_states:
            raise ValueError(
                f"episodes must be within [1, {eval_states}] (eval initial states), got {self.episodes}"
            )


ConfigStore.instance().store(name="hil_schema", node=HilRunConfig)


class _Scene:
    """The emulated table: initial states in, success out (from the emulator's physics)."""

    def __init__(self, emulator: FeetechBusEmulator, task: str) -> None:
        from sim.mujoco.so101.model import So101Indices, load_model
        from sim.mujoco.so101.tasks import SO101_TASKS

        self.emulator = emulator
        self.model = load_model()
        self.task = SO101_TASKS[task]
        self._indices = So101Indices.from_model(self.model)
        self._block = int(self.model.joint("block").qposadr[0])

    def reset(self, state_id: int) -> None:
        from sim.mujoco.so101.tasks import initial_state

        self.emulator.set_qpos(initial_state(self.task.spec.name, "eval", state_id).scene_qpos(self.model))

    def success(self) -> bool:
        from sim.mujoco.so101.tasks import SceneReadings

        qpos = self.emulator.qpos()[None]
        return bool(self.task.success(SceneReadings.from_qpos(qpos, self._indices, self._block))[0])


def _connect(platform: Platform) -> None:
    """Connect the robot, retrying: the emulator may answer late on a loaded machine (as a bus can)."""
    for attempt in range(1, CONNECT_ATTEMPTS + 1):
        try:
            platform.connect()
            return
        except (ConnectionError, RuntimeError) as error:
            log.warning("connect attempt %d/%d failed: %s", attempt, CONNECT_ATTEMPTS, error)
            if attempt == CONNECT_ATTEMPTS:
                raise


@contextlib.contextmanager
def _scheduled(events: list[tuple[float, Callable[[], None]]]) -> Iterator[Callable[[int, float], None]]:
    """An ``on_tick`` for `DeployLoop.run_episode` running each ``(seconds, action)`` that long after tick 0.

    On exit the actions not yet run are cancelled and a running one is waited for.
    """
    timers = [threading.Timer(at_s, action) for at_s, action in events]

    def on_tick(tick: int, elapsed_s: float) -> None:
        if tick == 0:
            for timer in timers:
                timer.start()

    try:
        yield on_tick
    finally:
        for timer in timers:
            timer.cancel()
            if timer.ident is not None:
                timer.join()


def _link_cut_episode(
    loop: DeployLoop,
    scene: _Scene,
    emulator: FeetechBusEmulator,
    instruction: str,
    cut_after_s: float,
    state_id: int,
) -> tuple[EpisodeResult, dict[str, Any]]:
    """Run an episode whose bus link is cut ``cut_after_s`` in; restore the link; say how it went."""
    from sim.emulators.feetech import BusFaults

    cut_at: list[float] = []

    def cut() -> None:
        applied_at = emulator.inject(BusFaults(silent_ids=frozenset(range(1, 7))))
        if applied_at is not None:
            cut_at.append(applied_at)  # when the emulator's servos fell silent, by its own clock

    scene.reset(state_id)
    try:
        with _scheduled([(cut_after_s, cut)]) as on_tick:
            result = loop.run_episode(instruction, success=scene.success, on_tick=on_tick)
    finally:
        emulator.faults = BusFaults()
    period = loop.config.period_s
    report: dict[str, Any] = {"kind": "link_cut", "at_s": cut_after_s, "injected": bool(cut_at)}
    if not cut_at or result.stop_time is None or result.stop_time < cut_at[0]:
        report["handled"] = (
            f"not measured: the episode ended ({result.stop_reason or 'time up or success'}) before the cut"
        )
        return result, report
    stop_s = result.stop_time - cut_at[0]
    sent_after_stop = result.last_command_time is not None and result.last_command_time > result.stop_time
    restored = _link_restored(loop)
    report |= {
        "watchdog_stop_ms": 1000 * stop_s,
        "watchdog_stop_periods": stop_s / period,
        "bound_periods": LINK_CUT_BOUND_PERIODS,
        "within_bound": stop_s <= LINK_CUT_BOUND_PERIODS * period,
        "commands_after_stop": sent_after_stop,
        "bus_errors": result.bus_errors,
        "input_buffer_resets": result.input_buffer_resets,
        "link_restored": restored,
        "handled": (
            f"watchdog stopped the robot {1000 * stop_s:.0f} ms after the cut ({stop_s / period:.2f} control "
            f"periods; bound {LINK_CUT_BOUND_PERIODS:g}); "
            f"{'a command was' if sent_after_stop else 'no command was'} sent after the stop; "
            f"{result.bus_errors} bus errors, each followed by a serial input-buffer reset; "
            f"link restored and the arm answering again: {'yes' if restored else 'no'}"
        ),
    }
    return result, report


def _camera_dropout_episode(
    loop: DeployLoop,
    scene: _Scene,
    server: MjpegCameraServer,
    instruction: str,
    at_s: float,
    duration_s: float,
    state_id: int,
) -> tuple[EpisodeResult, dict[str, Any]]:
    """Run an episode whose cameras send no frames from ``at_s`` for ``duration_s``; say how it went."""
    applied: dict[str, float] = {}

    def start() -> None:
        server.dropout = True
        applied["start"] = time.monotonic()  # the server has withheld frames since before this

    def end() -> None:
        server.dropout = False
        applied["end"] = time.monotonic()

    reopens_before = sum(camera.reopens for camera in loop.cameras.values())
    scene.reset(state_id)
    try:
        with _scheduled([(at_s, start), (at_s + duration_s, end)]) as on_tick:
            result = loop.run_episode(instruction, success=scene.success, on_tick=on_tick)
    finally:
        server.dropout = False
    report: dict[str, Any] = {
        "kind": "camera_dropout",
        "at_s": at_s,
        "duration_s": duration_s,
        "injected": "start" in applied,
    }
    if "start" not in applied:
        report["handled"] = (
            f"not measured: the episode ended ({result.stop_reason or 'success'}) before the dropout"
        )
        return result, report

    def after(moment: float | None, reference: float | None) -> float | None:
        return None if moment is None or reference is None else 1000 * (moment - reference)

    detected_ms = after(result.first_camera_error_time, applied["start"])
    resumed_ms = after(result.policy_resumed_time, applied.get("end"))
    reopens = sum(camera.reopens for camera in loop.cameras.values()) - reopens_before
    report |= {
        "held_ticks": result.camera_errors,
        "stale_detected_ms": detected_ms,
        "policy_resumed_ms": resumed_ms,
        "camera_reopens": reopens,
        "stop_reason": result.stop_reason,
        "success": result.success,
    }
    if result.camera_errors == 0:
        outcome = "no stale frame was seen (the dropout was shorter than the camera's max frame age)"
    else:
        detected = f"{detected_ms:.0f} ms" if detected_ms is not None else "n/a"
        outcome = (
            f"stale frames seen {detected} after the dropout began (camera_max_age_s "
            f"{1000 * loop.config.camera_max_age_s:.0f} ms); the robot held its last command for "
            f"{result.camera_errors} ticks, the plan made before the dropout was dropped"
        )
        if resumed_ms is not None:
            outcome += f"; the policy acted again {resumed_ms:.0f} ms after the frames came back"
        elif "end" not in applied:
            outcome += "; the episode ended during the dropout"
        else:
            outcome += "; the policy did not act again before the episode ended"
        outcome += f"; {reopens} stream reopen(s)"
    stop = result.stop_reason
    report["handled"] = outcome + ("; no stop" if stop is None else f"; stopped: {stop}")
    return result, report


def _link_restored(loop: DeployLoop) -> bool:
    """Whether the robot answers again once the link is back (late replies flushed first)."""
    for _ in range(5):
        loop.platform.recover_link()
        try:
            loop.platform.robot.get_observation()
            return True
        except ConnectionError:
            time.sleep(0.1)
    return False


def _bus_faults_report(
    config: FaultsConfig, scored: list[EpisodeResult], bus_counts: dict[str, int], reply_timeout_ms: float
) -> list[dict[str, Any]]:
    """One entry per injected bus fault of the scored episodes: what was injected and what the stack did."""
    summary = summarize_run(scored)
    watchdog_stops = sum(1 for stop in summary["stops"] if stop.startswith("watchdog"))
    errors = (
        f"{summary['bus_errors']} reads failed after LeRobot's retries, each followed by a serial "
        f"input-buffer reset ({summary['input_buffer_resets']}); {watchdog_stops} watchdog stops"
    )
    reports = []
    if config.latency_s:
        reports.append(
            {
                "kind": "latency_s",
                "value": config.latency_s,
                "handled": f"every reply {1000 * config.latency_s:.0f} ms late: loop jitter p99 "
                f"{summary['loop_jitter']['p99_ms'] or 0:.1f} ms; {errors}",
            }
        )
    for kind, value, count in (
        ("drop_rate", config.drop_rate, "replies_dropped"),
        ("corrupt_rate", config.corrupt_rate, "replies_corrupted"),
    ):
        if value:
            reports.append(
                {
                    "kind": kind,
                    "value": value,
                    count: bus_counts.get(count, 0),
                    "handled": f"{bus_counts.get(count, 0)} {count.replace('_', ' ')}; each costs the driver "
                    f"a {reply_timeout_ms:g} ms reply timeout and a retry; {errors}",
                }
            )
    for report in reports:
        report["episodes"] = len(scored)
    return reports


def _simulate(policy: VLAPolicy, config: HilRunConfig, control: ControlConfig) -> float:
    """Success rate of the policy in the so101 sim env on eval initial states 0..episodes-1.

    Episodes last as long as on the emulated hardware (``control.episode_time_s``).
    """
    from sim.mujoco.so101.env import CONTROL_HZ, So101BatchedEnv
    from vla_rl.evaluation import evaluate
    from vla_rl.policy.actor import ChunkActor

    env = So101BatchedEnv(
        num_envs=min(config.episodes, 8),
        tasks=[config.task],
        cameras=tuple(policy.config.cameras),
        image_size=control.image_size,
        autoreset_mode="Disabled",
        render_workers=0,
        max_steps=max(1, round(control.episode_time_s * CONTROL_HZ)),
        action_mode=config.robot.action_mode,
    )
    actor = ChunkActor(policy, config.policy.temperature, control.replan_every)
    try:
        result = evaluate(env, actor, [config.task], config.episodes, on_reset=actor.reset, progress=None)
    finally:
        env.close()
    return result.success_by_task[config.task]


class HilSetupError(RuntimeError):
    """The emulated hardware could not be brought up or connected."""


def run_hil(config: HilRunConfig) -> dict[str, Any]:
    """Run the HIL episodes (and the link-cut episode) and the sim evaluation; write and return the report.

    Raises:
        ValueError: the policy does not fit the SO-101 (or its files are invalid).
        FileNotFoundError: no policy at ``policy.path``.
        HilSetupError: the robot or the cameras could not connect to the emulators.

    """
    from real.cameras import CameraError, OpenCVCamera
    from real.deploy import dataset_features
    from real.robot import ROBOTS
    from sim.emulators.camera_server import MjpegCameraServer
    from sim.emulators.feetech import CALIBRATION_DIR, CALIBRATION_ID, BusFaults, FeetechBusEmulator
    from sim.mujoco.so101.env import CONTROL_HZ
    from sim.mujoco.so101.model import CAMERAS

    faults = config.faults
    control = config.control
    if control.fps != CONTROL_HZ:
        log.warning(
            "control.fps=%d, but the so101 env (and its policies) run at %d Hz", control.fps, CONTROL_HZ
        )
    settle_s = 2.0 / config.cameras.fps + 0.05  # until the cameras show a new scene
    scored: list[EpisodeResult] = []
    link_cut: dict[str, Any] | None = None
    dropout: dict[str, Any] | None = None
    extra: list[EpisodeResult] = []  # the fault episodes (not scored)
    with contextlib.ExitStack() as stack:
        emulator = stack.enter_context(FeetechBusEmulator())
        server = stack.enter_context(
            MjpegCameraServer(
                emulator.scene_name,
                width=control.image_size,
                height=control.image_size,
                fps=config.cameras.fps,
                jpeg_quality=config.cameras.jpeg_quality,
            )
        )
        robot_config = dataclasses.replace(
            config.robot,
            port=emulator.port,
            id=CALIBRATION_ID,
            calibration_dir=str(CALIBRATION_DIR),
            cameras={camera: server.url(camera) for camera in CAMERAS},
        )
        platform = ROBOTS.get(robot_config.name)(robot_config)
        policy = load_policy(config.policy, platform, list(CAMERAS))
        control = fit_control(control, policy.config.chunk_size)
        check_image_size(control, policy)
        scene = _Scene(emulator, config.task)
        instruction = scene.task.spec.instruction
        cameras = {
            name: OpenCVCamera(robot_config.cameras[name], name, max_age_s=control.camera_max_age_s)
            for name in policy.config.cameras
        }
        try:
            _connect(platform)
            stack.callback(platform.disconnect)
            for camera in cameras.values():
                camera.connect()
                stack.callback(camera.disconnect)
        except (ConnectionError, CameraError, RuntimeError) as error:
            raise HilSetupError(f"could not connect to the emulated hardware: {error}") from error
        features = dataset_features(
            platform, list(cameras), control.image_size, config.dataset.use_videos, with_success=True
        )
        recorder = EpisodeRecorder(config.dataset, control.fps, features, robot_type=robot_config.name)
        stack.callback(recorder.finalize)
        act = chunk_policy(policy, config.policy.temperature)
        loop = DeployLoop(platform, cameras, act, control, recorder)
        stack.callback(loop.close)
        if threading.current_thread() is threading.main_thread():
            loop.safety.install_signal_handlers((signal.SIGINT, signal.SIGTERM))
            stack.callback(loop.safety.restore_signal_handlers)

        emulator.faults = BusFaults(faults.latency_s, faults.drop_rate, faults.corrupt_rate)
        for state_id in range(config.episodes):
            scene.reset(state_id)
            time.sleep(settle_s)
            result = loop.run_episode(instruction, success=scene.success)
            scored.append(result)
            log.info(
                "episode %d/%d: %s%s",
                state_id + 1,
                config.episodes,
                "success" if result.success else "failure",
                f" (stopped: {result.stop_reason})" if result.stop_reason else "",
            )
            if loop.estopped:
                break
        emulator.faults = BusFaults()
        scored_bus_counts = emulator.counts
        fault_reports = _bus_faults_report(faults, scored, scored_bus_counts, robot_config.reply_timeout_ms)
        num_states = scene.task.spec.num_eval_states
        if faults.camera_dropout_s is not None and not loop.estopped:
            time.sleep(settle_s)
            result, dropout = _camera_dropout_episode(
                loop,
                scene,
                server,
                instruction,
                faults.camera_dropout_s,
                faults.camera_dropout_duration_s,
                config.episodes % num_states,
            )
            extra.append(result)
            fault_reports.append(dropout)
            log.info("camera dropout: %s", dropout["handled"])
        if faults.link_cut_s is not None and not loop.estopped:
            time.sleep(settle_s)
            state_id = (config.episodes + len(extra)) % num_states
            result, link_cut = _link_cut_episode(
                loop, scene, emulator, instruction, faults.link_cut_s, state_id
            )
            extra.append(result)
            fault_reports.append(link_cut)
            log.info("link cut: %s", link_cut["handled"])
        bus_counts, camera_counts = emulator.counts, server.counts

    complete = len(scored) == config.episodes
    sim_success = _simulate(policy, config, control) if config.sim_eval and complete else None
    summary = summarize_run(scored + extra)
    report: dict[str, Any] = {
        "task": config.task,
        "instruction": instruction,
        "policy": config.policy.path,
        "episodes": len(scored),
        "success_rate": {"hil": summarize_run(scored)["success_rate"], "sim": sim_success},
        "control": {
            "fps": control.fps,
            "period_ms": 1000 * control.period_s,
            "watchdog_timeout_ms": 1000 * control.period_s * control.watchdog_periods,
        },
        **{key: summary[key] for key in ("loop_jitter", "inference_latency", "frame_to_command_latency")},
        "safety_interventions": summary["safety_interventions"],
        "faults": fault_reports,
        "link_cut": link_cut,
        "camera_dropout": dropout,
        "bus": bus_counts,
        "cameras": camera_counts,
        "dataset": config.dataset.root,
        "episode_results": [r.as_dict() for r in scored + extra],
    }
    run_dir = Path(config.run_dir)
    write_run_report(run_dir, f"Hardware-in-the-loop: {config.task}", report, _markdown(report, summary))
    log.info("report: %s", run_dir / "report.md")
    return report


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="hil")
def main(cfg: DictConfig) -> None:
    """Run `run_hil` on the command line's configuration."""
    config = to_config(cfg, HilRunConfig)
    try:
        run_hil(config)
    except (ValueError, FileNotFoundError, HilSetupError) as error:
        sys.exit(f"error: {error}")


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def _fault_label(fault: dict[str, Any]) -> str:
    if "value" in fault:
        return f"{fault['kind']} {fault['value']:g}"
    label = f"{fault['kind']} at {fault['at_s']:g} s"
    return label + (f" for {fault['duration_s']:g} s" if "duration_s" in fault else "")


def _markdown(report: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    rates = report["success_rate"]
    lines = [
        f'Task `{report["task"]}` ("{report["instruction"]}"), policy `{report["policy"]}`, '
        f"{report['episodes']} episodes from eval initial states 0..{report['episodes'] - 1}.",
        "",
        "| | success |",
        "|---|---|",
        f"| HIL (emulated bus + cameras) | {_percent(rates['hil'])} |",
        f"| pure sim (so101 env) | {_percent(rates['sim'])} |",
        "",
        f"Control at {report['control']['fps']} Hz (period {report['control']['period_ms']:.0f} ms, "
        f"watchdog {report['control']['watchdog_timeout_ms']:.0f} ms).",
        "",
        *timing_lines(summary),
        "",
        *incident_lines(summary),
        "",
        "| fault | handled |",
        "|---|---|",
        *(f"| {_fault_label(f)} | {f['handled']} |" for f in report["faults"]),
    ]
    if not report["faults"]:
        lines.append("| none | |")
    cut = report["link_cut"]
    if cut is not None and "watchdog_stop_ms" in cut:
        lines += [
            "",
            f"Watchdog stop after the link cut: **{cut['watchdog_stop_ms']:.0f} ms** "
            f"({cut['watchdog_stop_periods']:.2f} control periods; bound {cut['bound_periods']:g}: "
            f"{'met' if cut['within_bound'] else 'MISSED'}).",
        ]
    lines += ["", f"Dataset: `{report['dataset']}`."]
    return lines


if __name__ == "__main__":
    main()
