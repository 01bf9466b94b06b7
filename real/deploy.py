"""The fixed-rate control loop: observation -> policy -> safety -> robot, recorded as a LeRobotDataset.

Each control tick (``ControlConfig.fps``) `DeployLoop` reads the robot and the freshest camera frames,
takes the next action of the current action chunk, passes it through the safety layer and sends it.
The policy runs in a thread of its own (`PolicyWorker`), so inference never blocks the loop: every
``replan_every`` ticks the loop hands it the newest observation (when it is idle), and when the chunk
for the observation of tick t comes back at tick t + L, its first L actions (whose time has passed) are
dropped and the rest replace the queue. While no action is queued (the first chunk is not there yet, or
inference was slower than the chunk) the robot holds the last safe action.

Safety (`real.safety`): every action is range-, slew- and workspace-checked in the robot's units; a
watchdog thread checks every ``WATCHDOG_CHECK_S`` that a valid command, based on a robot reading
requested within the last ``watchdog_periods`` control periods, was sent, and stops the robot otherwise
(a cut link: the loop blocks in the bus driver, so the check cannot live in the loop). Stamping commands
with the time of their reading bounds the stop after a link cut by ``watchdog_periods`` periods plus one
check, however late an answer already on its way arrives; the price is that a tick whose reading takes
longer than ``watchdog_periods - 1`` periods stops the robot too. After a stop the loop sends nothing
more (servos hold their last goal) and the episode ends.

A ``ConnectionError`` from the bus skips the tick, and the serial input buffer is reset (the platform's
`recover_link`) so that late replies do not poison the next exchange; replies found waiting at the start
of a tick (a read whose retry succeeded leaves its own replies behind) are dropped too
(`discard_stale_input`). A camera that is stale or closed (a camera dropout) makes the tick hold: the
last action is sent again (it feeds the watchdog: the robot is known to be holding still), nothing is
recorded, and the queued actions are dropped, as are chunks computed from observations before the
dropout; once frames are fresh again the policy is handed a new observation at once and the robot holds
until its chunk comes. A bus that stops answering thus ends in a watchdog stop; a blind robot holds
still and resumes from what it sees when it sees again.

Recording: every tick that sent a command adds a frame (the camera images the policy saw, the state,
and the action actually sent, normalized as the policy's) to a LeRobotDataset written to
``<root>.partial`` and renamed to ``<root>`` by `EpisodeRecorder.finalize`, so an interrupted run
(Ctrl-C: the first SIGINT is an e-stop that ends the episode and the run cleanly) leaves a valid
dataset of its finished episodes.

Timing: loop jitter (how late each tick started), inference latency (one ``act`` call), and
camera-frame-to-command latency (from the oldest camera frame of the observation a chunk was computed
from to the sending of that chunk's first action).
"""

from __future__ import annotations

import logging
import math
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from real.cameras import CameraError, OpenCVCamera
from real.robot import Platform
from real.safety import SafetyLayer
from sim.core import ACTION, OBS_STATE, TASK, image_key

logger = logging.getLogger(__name__)

ChunkPolicy = Callable[[dict[str, Any]], np.ndarray]
"""Maps a batched observation of one (LeRobot keys, B = 1) to an action chunk ``[K, A]``, normalized."""

SUCCESS = "success"
WATCHDOG_CHECK_S = 0.002  # the watchdog thread's check interval (at most 1/20 of a control period)


@dataclass
class ControlConfig:
    """The control loop.

    Attributes:
        fps: control ticks per second (the rate the policy was trained at).
        episode_time_s: longest episode.
        replan_every: ticks between observations handed to the policy (when it is idle); keep it at most
            the chunk size minus the inference latency in ticks, or the robot holds while it waits.
        watchdog_periods: the watchdog stops the robot when the reading behind the last command is this
            many control periods old (> 1; below 2 to stop within 2 periods of a link cut).
        camera_max_age_s: camera frames older than this are stale (the tick is skipped).
        image_size: camera frames are centre-cropped to a square and resized to this side (pixels) for
            the policy and the dataset.

    """

    fps: int = 20
    episode_time_s: float = 20.0
    replan_every: int = 4
    watchdog_periods: float = 1.75
    camera_max_age_s: float = 0.25
    image_size: int = 96

    def __post_init__(self) -> None:
        if not 1 <= self.fps <= 1000:
            raise ValueError(f"control.fps must be within [1, 1000], got {self.fps}")
        if not (math.isfinite(self.episode_time_s) and self.episode_time_s > 0):
            raise ValueError(f"control.episode_time_s must be > 0, got {self.episode_time_s}")
        if self.replan_every < 1:
            raise ValueError(f"control.replan_every must be >= 1, got {self.replan_every}")
        if not self.watchdog_periods > 1.0:
            raise ValueError(f"control.watchdog_periods must be > 1, got {self.watchdog_periods}")
        if not self.camera_max_age_s > 0:
            raise ValueError(f"control.camera_max_age_s must be > 0, got {self.camera_max_age_s}")
        if not 16 <= self.image_size <= 1024:
            raise ValueError(f"control.image_size must be within [16, 1024], got {self.image_size}")

    @property
    def period_s(self) -> float:
        """One control period, seconds."""
        return 1.0 / self.fps


@dataclass
class DatasetConfig:
    """Where and how episodes are recorded.

    Attributes:
        root: dataset directory (written as ``<root>.partial`` until finalized).
        repo_id: the dataset's LeRobot repo id (a name; nothing is uploaded).
        use_videos: store cameras as videos (encoded between episodes) or as PNG images.
        overwrite: replace an existing dataset at ``root`` (otherwise that is an error).

    """

    root: str = "data/deploy/so101"
    repo_id: str = "vla_rl/so101_deploy"
    use_videos: bool = True
    overwrite: bool = False


# --------------------------------------------------------------------------------------------------
# Timing


def summarize_ms(samples_s: list[float]) -> dict[str, float | int | None]:
    """``{"n", "p50_ms", "p99_ms", "max_ms"}`` of durations given in seconds (None when there are none)."""
    if not samples_s:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    values = np.asarray(samples_s) * 1000.0
    return {
        "n": len(values),
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
        "max_ms": float(values.max()),
    }


@dataclass
class EpisodeResult:
    """What happened in one episode.

    Attributes:
        index: episode number in the run.
        task: the instruction.
        ticks: control ticks run.
        commands: commands sent to the robot.
        duration_s: wall time of the episode.
        success: the task's success (None when nothing can tell, as on hardware without a judge).
        stop_reason: why the safety layer stopped the robot (None: it was not stopped).
        stop_time: ``time.monotonic()`` of that stop.
        last_command_time: ``time.monotonic()`` when the last command was sent.
        interventions: safety interventions by kind, during this episode.
        bus_errors: ``ConnectionError``s from the robot.
        input_buffer_resets: serial input buffers reset after them.
        stale_input_flushes: ticks that found late replies of an earlier read waiting, and dropped them.
        camera_errors: ticks that held (and recorded nothing) for a stale or closed camera.
        first_camera_error_time: ``time.monotonic()`` of the first such tick.
        last_camera_error_time: ``time.monotonic()`` of the last such tick.
        policy_resumed_time: ``time.monotonic()`` of the first command from a chunk computed after the
            last camera error (None: none came, or there was no camera error).
        policy_waits: ticks that held before the first chunk arrived.
        policy_underruns: later ticks that held because the queue ran dry.
        overruns: ticks that started more than one period late (the schedule was re-anchored).
        chunks: action chunks received.
        jitter_s: per tick, how late it started.
        inference_s: per chunk, the policy's ``act`` time.
        frame_to_command_s: per chunk, oldest camera frame -> first action sent.

    """

    index: int
    task: str
    ticks: int = 0
    commands: int = 0
    duration_s: float = 0.0
    success: bool | None = None
    stop_reason: str | None = None
    stop_time: float | None = None
    last_command_time: float | None = None
    interventions: dict[str, int] = field(default_factory=dict)
    bus_errors: int = 0
    input_buffer_resets: int = 0
    stale_input_flushes: int = 0
    camera_errors: int = 0
    first_camera_error_time: float | None = None
    last_camera_error_time: float | None = None
    policy_resumed_time: float | None = None
    policy_waits: int = 0
    policy_underruns: int = 0
    overruns: int = 0
    chunks: int = 0
    jitter_s: list[float] = field(default_factory=list)
    inference_s: list[float] = field(default_factory=list)
    frame_to_command_s: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, with timing summaries in place of the raw samples."""
        values = asdict(self)
        for key in ("jitter_s", "inference_s", "frame_to_command_s"):
            values[key.removesuffix("_s")] = summarize_ms(values.pop(key))
        return values


def summarize_run(results: list[EpisodeResult]) -> dict[str, Any]:
    """Totals and timing percentiles over all episodes of a run."""
    interventions: dict[str, int] = {}
    for result in results:
        for kind, count in result.interventions.items():
            interventions[kind] = interventions.get(kind, 0) + count
    judged = [result.success for result in results if result.success is not None]
    return {
        "episodes": len(results),
        "success_rate": float(np.mean(judged)) if judged else None,
        "loop_jitter": summarize_ms([s for r in results for s in r.jitter_s]),
        "inference_latency": summarize_ms([s for r in results for s in r.inference_s]),
        "frame_to_command_latency": summarize_ms([s for r in results for s in r.frame_to_command_s]),
        "safety_interventions": interventions,
        "bus_errors": sum(r.bus_errors for r in results),
        "input_buffer_resets": sum(r.input_buffer_resets for r in results),
        "stale_input_flushes": sum(r.stale_input_flushes for r in results),
        "camera_errors": sum(r.camera_errors for r in results),
        "policy_underruns": sum(r.policy_underruns for r in results),
        "overruns": sum(r.overruns for r in results),
        "stops": [r.stop_reason for r in results if r.stop_reason],
    }


# --------------------------------------------------------------------------------------------------
# The policy thread


class PolicyError(RuntimeError):
    """The policy failed or returned something that is not an action chunk."""


@dataclass(frozen=True)
class Chunk:
    """An action chunk and where it came from.

    Attributes:
        actions: float ``[K, A]``, normalized; action i is meant for tick ``tick + i``.
        tick: the tick of the observation it was computed from.
        frame_time: ``time.monotonic()`` of the oldest camera frame of that observation.
        inference_s: how long ``act`` took.
        episode: the episode it belongs to.

    """

    actions: np.ndarray
    tick: int
    frame_time: float
    inference_s: float
    episode: int


class PolicyWorker:
    """Runs a `ChunkPolicy` in a daemon thread, one observation at a time."""

    def __init__(self, policy: ChunkPolicy, action_dim: int) -> None:
        """Start the thread; ``action_dim`` (A) is checked on every chunk."""
        self._policy = policy
        self._action_dim = action_dim
        self._condition = threading.Condition()
        self._request: tuple[dict[str, Any], int, float, int] | None = None
        self._result: Chunk | None = None
        self._error: BaseException | None = None
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="policy", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """Whether an observation is being (or waiting to be) processed."""
        with self._condition:
            return self._busy

    def submit(self, observation: dict[str, Any], tick: int, frame_time: float, episode: int) -> bool:
        """Hand over an observation; False (and nothing happens) when the worker is busy."""
        with self._condition:
            if self._busy or self._closed:
                return False
            self._request, self._busy = (observation, tick, frame_time, episode), True
            self._condition.notify()
            return True

    def poll(self, episode: int) -> Chunk | None:
        """The finished chunk of ``episode``, if one is ready (chunks of earlier episodes are dropped).

        Raises:
            PolicyError: the policy raised, or returned an array that is not ``[K, A]``.

        """
        with self._condition:
            error, self._error = self._error, None
            result, self._result = self._result, None
        if error is not None:
            raise PolicyError(f"the policy failed: {error}") from error
        return result if result is not None and result.episode == episode else None

    def close(self) -> None:
        """Stop the thread after the current call returns."""
        with self._condition:
            self._closed = True
            self._condition.notify()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._request is not None or self._closed)
                if self._closed:
                    return
                assert self._request is not None
                (observation, tick, frame_time, episode), self._request = self._request, None
            start = time.monotonic()
            try:
                actions = np.asarray(self._policy(observation), dtype=np.float64)
                if actions.ndim != 2 or actions.shape[1] != self._action_dim or len(actions) == 0:
                    raise ValueError(f"expected an action chunk [K, {self._action_dim}], got {actions.shape}")
                chunk = Chunk(actions, tick, frame_time, time.monotonic() - start, episode)
            except Exception as error:  # handed to the loop, which stops the robot
                with self._condition:
                    self._error, self._busy = error, False
                continue
            with self._condition:
                self._result, self._busy = chunk, False


# --------------------------------------------------------------------------------------------------
# Recording


def square_image(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop ``[H, W, 3]`` to a square and resize it to ``[size, size, 3]`` (area interpolation)."""
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = image[top : top + side, left : left + side]
    if side == size:
        return np.ascontiguousarray(square)
    return cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA)


def dataset_features(
    platform: Platform, cameras: list[str], image_size: int, use_videos: bool, with_success: bool
) -> dict[str, dict[str, Any]]:
    """LeRobot feature specs: camera images, ``observation.state``, ``action`` (and ``success``)."""
    features: dict[str, dict[str, Any]] = {
        image_key(camera): {
            "dtype": "video" if use_videos else "image",
            "shape": (image_size, image_size, 3),
            "names": ["height", "width", "channels"],
        }
        for camera in cameras
    }
    for key, names in ((OBS_STATE, platform.state_names), (ACTION, platform.action_names)):
        features[key] = {"dtype": "float32", "shape": (len(names),), "names": list(names)}
    if with_success:
        features[SUCCESS] = {"dtype": "bool", "shape": (1,), "names": None}
    return features


class EpisodeRecorder:
    """Episodes written with LeRobot's own writer to ``<root>.partial``, renamed to ``<root>`` at the end.

    Frames are handed to a writer thread (`add` only queues them), so the control loop never waits for
    LeRobot's frame validation and image writing; `save_episode` waits until they are all written.
    """

    def __init__(
        self, config: DatasetConfig, fps: int, features: dict[str, dict[str, Any]], robot_type: str
    ) -> None:
        """Create the dataset.

        Raises:
            FileExistsError: a dataset is at ``config.root`` and ``config.overwrite`` is false.

        """
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        self.root = Path(config.root)
        if self.root.exists() and not config.overwrite:
            raise FileExistsError(
                f"{self.root} exists; set dataset.overwrite=true to replace it or choose another dataset.root"
            )
        self.partial = self.root.with_name(self.root.name + ".partial")
        shutil.rmtree(self.partial, ignore_errors=True)
        self.features = features
        self.episodes = 0
        self._frames = 0
        self._dataset = LeRobotDataset.create(
            config.repo_id,
            fps=fps,
            features=features,
            root=self.partial,
            robot_type=robot_type,
            use_videos=config.use_videos,
            image_writer_threads=2,
        )
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._writer = threading.Thread(target=self._write, name="dataset-writer", daemon=True)
        self._writer.start()

    def add(self, frame: dict[str, Any]) -> None:
        """Queue one frame (every feature, plus ``task``) for the current episode."""
        self._queue.put(frame)
        self._frames += 1

    def save_episode(self) -> None:
        """Write the current episode once its frames are in (nothing when it has none).

        Raises:
            RuntimeError: LeRobot rejected a frame (the message says why).

        """
        self._queue.join()
        if self._error is not None:
            raise RuntimeError(f"recording failed: {self._error}") from self._error
        if self._frames:
            self._dataset.save_episode()
            self.episodes += 1
        self._frames = 0

    def finalize(self) -> Path:
        """Stop the writer, close the dataset and move it to ``root``; return ``root``."""
        self._queue.put(None)
        self._writer.join()
        self._dataset.finalize()
        if self.root.exists():
            shutil.rmtree(self.root)
        self.partial.rename(self.root)
        return self.root

    def _write(self) -> None:
        while (frame := self._queue.get()) is not None:
            try:
                if self._error is None:
                    self._dataset.add_frame(frame)
            except Exception as error:  # reported by save_episode, in the caller's thread
                self._error = error
            finally:
                self._queue.task_done()
        self._queue.task_done()


# --------------------------------------------------------------------------------------------------
# The loop


@dataclass
class _Episode:
    """The loop's per-episode state."""

    result: EpisodeResult
    number: int
    hold: np.ndarray  # robot units: what is sent when no action is queued
    queue: list[np.ndarray] = field(default_factory=list)
    last_submit: int | None = None
    pending_frame_time: float | None = None  # the newest chunk's frame time, until its first action is sent
    got_chunk: bool = False
    seen_from_tick: int = 0  # chunks of observations before this tick (a camera dropout) are dropped


class DeployLoop:
    """Drives one `Platform` with a `ChunkPolicy` (see the module docstring).

    The platform's robot and the cameras must be connected by the caller; `close` stops the policy
    thread (it disconnects nothing).
    """

    def __init__(
        self,
        platform: Platform,
        cameras: dict[str, OpenCVCamera],
        policy: ChunkPolicy,
        config: ControlConfig,
        recorder: EpisodeRecorder | None = None,
        hard_exit: Callable[[int], None] = os._exit,
    ) -> None:
        """Set up the safety layer (in the platform's units) and start the policy thread.

        ``hard_exit`` is what a second SIGINT / SIGTERM calls (`real.safety.SafetyLayer`), e.g. to restore
        the terminal first.
        """
        self.platform = platform
        self.cameras = cameras
        self.config = config
        self.recorder = recorder
        period = config.period_s
        self.safety = SafetyLayer(
            platform.safety_limits(period, config.watchdog_periods * period),
            on_stop=self._on_stop,
            hard_exit=hard_exit,
        )
        self._worker = PolicyWorker(policy, len(platform.action_names))
        self._safety_lock = threading.Lock()
        self._stopped = threading.Event()
        self._stop_time: float | None = None
        self._stop_reason: str | None = None
        self._episodes = 0
        self._estops_at_reset = 0

    @property
    def estopped(self) -> bool:
        """Whether an e-stop (signal, key or API) came since the current or last episode began."""
        return self.safety.counts["estop"] > self._estops_at_reset

    def close(self) -> None:
        """Stop the policy thread."""
        self._worker.close()

    def run_episode(
        self,
        task: str,
        success: Callable[[], bool] | None = None,
        on_tick: Callable[[int, float], None] | None = None,
    ) -> EpisodeResult:
        """Run one episode of ``task`` (the instruction) until its time is up, success, or a stop.

        The safety layer is re-armed at the start (a watchdog stop of the previous episode is cleared),
        unless an e-stop came since the last episode began: then nothing runs and the result says so.

        Args:
            task: the language instruction.
            success: judges the task after each tick (the HIL harness reads the emulator's physics);
                the episode ends when it returns True. None on hardware.
            on_tick: called at the start of each tick with ``(tick, seconds since the episode began)``
                (fault injection).

        Raises:
            ConnectionError: the robot cannot be read at the start.
            PolicyError: the policy failed (the robot is stopped first).

        """
        self._episodes += 1
        if self.estopped:
            return EpisodeResult(self._episodes - 1, task, stop_reason="e-stop before the episode")
        self.platform.discard_stale_input()
        present = self.platform.values(self.platform.robot.get_observation())
        with self._safety_lock:
            self.safety.reset(present)
            self._estops_at_reset = self.safety.counts["estop"]
        self._stopped.clear()
        self._stop_time = self._stop_reason = None
        counts_before = dict(self.safety.counts)
        episode = _Episode(EpisodeResult(self._episodes - 1, task), self._episodes, present)
        result = episode.result
        period = self.config.period_s
        max_ticks = math.ceil(self.config.episode_time_s * self.config.fps)
        watchdog_done = threading.Event()
        watchdog = threading.Thread(
            target=self._watch,
            args=(watchdog_done, min(period / 20, WATCHDOG_CHECK_S)),
            name="watchdog",
            daemon=True,
        )
        watchdog.start()
        start = deadline = time.monotonic()
        try:
            while result.ticks < max_ticks and not self._stopped.is_set():
                if self._stopped.wait(max(0.0, deadline - time.monotonic())):
                    break
                tick_start = time.monotonic()
                lateness = tick_start - deadline
                result.jitter_s.append(lateness)
                if lateness > period:
                    result.overruns += 1
                    deadline = tick_start
                deadline += period
                if on_tick is not None:
                    on_tick(result.ticks, tick_start - start)
                frame = self._tick(episode, task)
                result.ticks += 1
                if frame is None:
                    continue
                solved = success is not None and success()
                if success is not None:
                    frame[SUCCESS] = np.array([solved])
                if self.recorder is not None:
                    self.recorder.add(frame)
                if solved:
                    result.success = True
                    break
        except PolicyError as error:
            self.safety.estop(str(error))
            raise
        finally:
            watchdog_done.set()
            watchdog.join()
            result.duration_s = time.monotonic() - start
            result.stop_reason, result.stop_time = self._stop_reason, self._stop_time
            result.interventions = {
                kind: count - counts_before[kind]
                for kind, count in self.safety.counts.items()
                if count > counts_before[kind]
            }
            if success is not None and result.success is None:
                result.success = success()
            if self.recorder is not None:
                self.recorder.save_episode()
        return result

    def _tick(self, episode: _Episode, task: str) -> dict[str, Any] | None:
        """One control tick; the dataset frame it produced, or None (nothing sent, or no camera frames)."""
        result, platform = episode.result, self.platform
        observed_at = time.monotonic()
        stale = platform.discard_stale_input()
        if stale:
            result.stale_input_flushes += 1
            logger.debug("tick %d: dropped %d stale bytes from the bus's input buffer", result.ticks, stale)
        try:
            raw = platform.robot.get_observation()
        except ConnectionError as error:
            self._bus_error(result, error)
            return None
        try:
            frames = {name: camera.read_latest() for name, camera in self.cameras.items()}
        except CameraError as error:
            self._blind(episode, error)
            self._send(episode, episode.hold, observed_at)
            return None
        tick = result.ticks
        images = {name: square_image(frame.image, self.config.image_size) for name, frame in frames.items()}
        state = platform.state(raw)
        frame_time = min((frame.timestamp for frame in frames.values()), default=time.monotonic())

        chunk = self._worker.poll(episode.number)
        if chunk is not None and chunk.tick < episode.seen_from_tick:
            logger.info("tick %d: dropped a chunk computed before the camera dropout", tick)
            chunk = None
        if chunk is not None:
            result.chunks += 1
            result.inference_s.append(chunk.inference_s)
            episode.queue = list(chunk.actions[tick - chunk.tick :])
            episode.pending_frame_time = chunk.frame_time
            episode.got_chunk = True
        if episode.last_submit is None or tick - episode.last_submit >= self.config.replan_every:
            observation: dict[str, Any] = {image_key(name): image[None] for name, image in images.items()}
            observation[OBS_STATE] = state[None]
            observation[TASK] = (task,)
            if self._worker.submit(observation, tick, frame_time, episode.number):
                episode.last_submit = tick

        from_policy = bool(episode.queue)
        if from_policy:
            values = platform.to_robot(episode.queue.pop(0), episode.hold)
        else:
            values = episode.hold
            if episode.got_chunk:
                result.policy_underruns += 1
            else:
                result.policy_waits += 1
        last = episode.hold
        sent = self._send(episode, values, observed_at)
        if sent is None:
            return None
        if from_policy and episode.pending_frame_time is not None:
            result.frame_to_command_s.append(time.monotonic() - episode.pending_frame_time)
            episode.pending_frame_time = None
        if from_policy and result.camera_errors and result.policy_resumed_time is None:
            result.policy_resumed_time = time.monotonic()
            logger.info("tick %d: the policy acts again after the camera dropout", tick)
        frame: dict[str, Any] = {image_key(name): image for name, image in images.items()}
        frame[OBS_STATE] = state
        frame[ACTION] = platform.action_to_policy(sent, last).astype(np.float32)
        frame[TASK] = task
        return frame

    def _send(self, episode: _Episode, values: np.ndarray, observed_at: float) -> np.ndarray | None:
        """Filter ``values`` (robot units) through the safety layer and send them; what was sent, or None.

        The command is stamped with ``observed_at``, when the robot reading behind it was requested: the
        watchdog counts from the freshest reading a command was based on, so a reading that was answered
        just before a link cut (and came back late) does not extend the time to the stop.
        """
        with self._safety_lock:
            if self._stopped.is_set():
                return None
            safe, _ = self.safety.filter(values, observed_at, self.platform.predict_position)
        try:
            sent = self.platform.values(self.platform.robot.send_action(self.platform.action(safe)))
        except ConnectionError as error:
            self._bus_error(episode.result, error)
            return None
        episode.result.commands += 1
        episode.result.last_command_time = time.monotonic()
        episode.hold = sent
        return sent

    def _blind(self, episode: _Episode, error: CameraError) -> None:
        """A tick without usable camera frames: count it and forget the plan made before it."""
        result, now = episode.result, time.monotonic()
        if result.last_camera_error_time is None or result.policy_resumed_time is not None:
            logger.warning("tick %d: camera dropout, holding: %s", result.ticks, error)  # a new dropout
        else:
            logger.debug("tick %d: still holding: %s", result.ticks, error)
        result.camera_errors += 1
        if result.first_camera_error_time is None:
            result.first_camera_error_time = now
        result.last_camera_error_time = now
        result.policy_resumed_time = None
        episode.queue.clear()
        episode.pending_frame_time = None
        episode.seen_from_tick = result.ticks + 1
        episode.last_submit = None  # hand the policy the first fresh observation at once

    def _bus_error(self, result: EpisodeResult, error: ConnectionError) -> None:
        result.bus_errors += 1
        if self.platform.recover_link():
            result.input_buffer_resets += 1
        logger.warning("tick %d skipped: bus error (%s); serial input buffer reset", result.ticks, error)

    def _watch(self, done: threading.Event, interval: float) -> None:
        while not done.wait(interval):
            with self._safety_lock:
                if self.safety.check(time.monotonic()):
                    return

    def _on_stop(self, reason: str) -> None:
        self._stop_time = time.monotonic()
        self._stop_reason = reason
        self._stopped.set()
        logger.error("robot stopped: %s", reason)
