"""The control loop on a fake robot and fake cameras: chunk timing, safety, faults, recording, Ctrl-C."""

import os
import signal
import time

import numpy as np
import pytest

from real.cameras import Frame, StaleFrameError
from real.deploy import (
    ControlConfig,
    DatasetConfig,
    DeployLoop,
    EpisodeRecorder,
    PolicyError,
    dataset_features,
    square_image,
    summarize_ms,
    summarize_run,
)
from real.robot import Platform
from real.safety import SafetyLimits

KEYS = ("a.pos", "b.pos")


class FakeRobot:
    def __init__(self):
        self.position = np.zeros(2)
        self.sent = []
        self.failures = 0  # reads that raise ConnectionError
        self.cut_after = None  # reads after which the link is cut (reads block)
        self.reads = 0
        self.cut_time = None

    def get_observation(self):
        self.reads += 1
        if self.cut_after is not None and self.reads > self.cut_after:
            if self.cut_time is None:
                self.cut_time = time.monotonic()
            time.sleep(0.3)
            raise ConnectionError("There is no status packet!")
        if self.failures:
            self.failures -= 1
            raise ConnectionError("There is no status packet!")
        return dict(zip(KEYS, self.position, strict=True))

    def send_action(self, action):
        self.sent.append((time.monotonic(), np.array([action[key] for key in KEYS])))
        self.position = np.array([action[key] for key in KEYS])
        return action


class FakePlatform(Platform):
    """Robot units are ten times the policy's."""

    action_keys = KEYS

    def __init__(self):
        self.robot = FakeRobot()
        self.resets = 0
        self.stale_bytes = []  # what discard_stale_input finds, tick by tick

    def to_policy(self, values):
        return np.asarray(values, dtype=np.float64) / 10.0

    def to_robot(self, action, last):
        return np.asarray(action, dtype=np.float64) * 10.0

    def safety_limits(self, control_period_s, watchdog_timeout_s):
        return SafetyLimits(low=[-5.0, -5.0], high=[5.0, 5.0], watchdog_timeout_s=watchdog_timeout_s)

    def recover_link(self):
        self.resets += 1
        return True

    def discard_stale_input(self):
        return self.stale_bytes.pop(0) if self.stale_bytes else 0


class FakeCamera:
    def __init__(self, stale_reads=0):
        self.stale_reads = stale_reads
        self.index = 0

    def read_latest(self):
        if self.stale_reads:
            self.stale_reads -= 1
            raise StaleFrameError("camera front: newest frame is 900 ms old")
        self.index += 1
        return Frame(np.full((12, 16, 3), 100, np.uint8), time.monotonic(), self.index)


def ramp_policy(delay_s=0.0, size=6):
    """Chunks whose action i is (i, -i) / 10 in the policy's units: the robot gets (i, -i)."""

    def act(observation):
        assert observation["observation.state"].shape == (1, 2)
        assert observation["observation.images.front"].shape == (1, 16, 16, 3)
        assert observation["task"] == ("stack",)
        time.sleep(delay_s)
        steps = np.arange(size, dtype=np.float64)
        return np.stack([steps, -steps], axis=1) / 10.0

    return act


def make_loop(policy, recorder=None, cameras=None, **control):
    # A generous watchdog unless a test is about it: 50 Hz is tight for a loaded test host.
    values = {"fps": 50, "episode_time_s": 0.6, "replan_every": 3, "image_size": 16, "watchdog_periods": 4.0}
    values |= control
    platform = FakePlatform()
    loop = DeployLoop(platform, cameras or {"front": FakeCamera()}, policy, ControlConfig(**values), recorder)
    return platform, loop


def test_chunks_are_time_aligned_and_inference_never_blocks_the_loop():
    # Inference takes ~3 periods: the loop keeps ticking (holding) and drops the actions whose time passed.
    platform, loop = make_loop(ramp_policy(delay_s=0.06))
    try:
        result = loop.run_episode("stack")
    finally:
        loop.close()
    assert result.ticks == 30 and result.commands == 30 and result.stop_reason is None
    assert result.policy_waits >= 2 and result.chunks >= 2
    first_policy_action = next(values for _, values in platform.robot.sent if values[0] > 0)
    assert first_policy_action[0] >= 2, "the first actions of a late chunk must be skipped"
    assert len(result.inference_s) == result.chunks and min(result.inference_s) >= 0.06
    assert len(result.frame_to_command_s) >= 1 and min(result.frame_to_command_s) >= 0.06


def test_actions_go_through_the_safety_layer_and_the_sent_action_is_recorded(tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    platform = FakePlatform()
    features = dataset_features(platform, ["front"], 16, use_videos=False, with_success=True)
    recorder = EpisodeRecorder(
        DatasetConfig(root=str(tmp_path / "data"), use_videos=False), 50, features, "fake"
    )
    platform, loop = make_loop(lambda observation: np.tile([0.7, -0.2], (4, 1)), recorder)
    try:
        result = loop.run_episode("stack", success=lambda: len(platform.robot.sent) >= 20)
    finally:
        loop.close()
    root = recorder.finalize()
    assert result.success and result.commands == 20
    assert result.interventions["range"] >= 1  # 0.7 is 7 in robot units, past the +-5 range
    sent = np.array([values for _, values in platform.robot.sent])
    np.testing.assert_allclose(sent[-1], [5.0, -2.0])
    dataset = LeRobotDataset("vla_rl/so101_deploy", root=root)
    assert dataset.num_episodes == 1 and dataset.num_frames == 20
    recorded = np.stack([dataset[i]["action"].numpy() for i in range(20)])
    np.testing.assert_allclose(recorded, sent / 10.0, atol=1e-6)
    assert dataset[0]["observation.images.front"].shape == (3, 16, 16)
    assert bool(dataset[19]["success"]) and not bool(dataset[0]["success"])
    assert dataset[0]["task"] == "stack"


def test_bus_errors_are_counted_and_the_episode_goes_on_while_the_watchdog_allows():
    # Two skipped ticks: three periods without a command, within the watchdog's four.
    platform, loop = make_loop(ramp_policy())

    def fail_twice(tick, _):
        if tick == 5:
            platform.robot.failures = 2

    try:
        result = loop.run_episode("stack", on_tick=fail_twice)
    finally:
        loop.close()
    assert result.bus_errors == 2 and result.input_buffer_resets == 2 and platform.resets == 2
    assert result.commands == result.ticks - 2 and result.stop_reason is None


def test_stale_bus_replies_are_dropped_before_each_read():
    platform, loop = make_loop(ramp_policy())
    platform.stale_bytes = [0, 0, 48, 0, 48]  # the first call is at the episode's start
    try:
        result = loop.run_episode("stack")
    finally:
        loop.close()
    assert result.stale_input_flushes == 2 and summarize_run([result])["stale_input_flushes"] == 2


def test_stale_camera_frames_make_the_robot_hold():
    platform, loop = make_loop(ramp_policy(), cameras={"front": FakeCamera(stale_reads=3)})
    try:
        result = loop.run_episode("stack")
    finally:
        loop.close()
    assert result.camera_errors == 3 and result.commands == result.ticks and result.stop_reason is None
    np.testing.assert_array_equal(platform.robot.sent[2][1], [0.0, 0.0])  # held the present position


class DropoutCamera(FakeCamera):
    """Stale on the reads numbered in ``blind_reads`` (1-based), as in a camera dropout."""

    def __init__(self, blind_reads):
        super().__init__()
        self.blind_reads = set(blind_reads)
        self.reads = 0

    def read_latest(self):
        self.reads += 1
        if self.reads in self.blind_reads:
            raise StaleFrameError("camera front: newest frame is 400 ms old")
        return super().read_latest()


def test_a_camera_dropout_holds_then_the_policy_resumes_from_a_fresh_observation():
    calls = []  # when the policy was called; call k (1-based) sends (k, k) / 10 in robot units

    def numbered(observation):
        calls.append(time.monotonic())
        return np.full((6, 2), len(calls) / 100.0)

    camera = DropoutCamera(range(11, 17))
    platform, loop = make_loop(numbered, cameras={"front": camera}, episode_time_s=1.0)
    try:
        result = loop.run_episode("stack")
    finally:
        loop.close()
    assert result.camera_errors == 6 and result.stop_reason is None and result.commands == result.ticks
    blind_start, blind_end = result.first_camera_error_time, result.last_camera_error_time
    sent = platform.robot.sent
    before = [values for at, values in sent if at < blind_start]
    during = [values for at, values in sent if at >= blind_start][:6]  # one command per blind tick
    for values in during:  # held what was sent last before the dropout
        np.testing.assert_array_equal(values, before[-1])
    after = [values for at, values in sent if at > blind_end and not np.array_equal(values, before[-1])]
    assert after, "the policy must act again once the frames are fresh"
    for values in after:  # never an action planned before the dropout
        assert calls[round(values[0] * 10) - 1] > blind_end
    assert result.policy_resumed_time is not None and result.policy_resumed_time > blind_end
    summary = result.as_dict()
    assert summary["camera_errors"] == 6 and summary["policy_resumed_time"] == result.policy_resumed_time


def test_watchdog_stops_the_robot_within_two_periods_of_a_link_cut():
    platform, loop = make_loop(ramp_policy(), fps=10, episode_time_s=3.0, watchdog_periods=1.75)
    platform.robot.cut_after = 8
    try:
        result = loop.run_episode("stack")
    finally:
        loop.close()
    assert result.stop_reason.startswith("watchdog")
    assert result.stop_time - platform.robot.cut_time <= 2 * 0.1
    assert platform.robot.sent[-1][0] < result.stop_time  # nothing was sent after the stop
    assert result.bus_errors >= 1


def test_first_sigint_is_an_estop_that_ends_the_episode_and_leaves_a_valid_dataset(tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    platform = FakePlatform()
    features = dataset_features(platform, ["front"], 16, use_videos=False, with_success=False)
    recorder = EpisodeRecorder(
        DatasetConfig(root=str(tmp_path / "data"), use_videos=False), 50, features, "fake"
    )
    platform, loop = make_loop(ramp_policy(), recorder, episode_time_s=30.0)

    def press_ctrl_c(tick, _):
        if tick == 10:
            os.kill(os.getpid(), signal.SIGINT)

    loop.safety.install_signal_handlers()
    try:
        result = loop.run_episode("stack", on_tick=press_ctrl_c)
        again = loop.run_episode("stack")
    finally:
        loop.safety.restore_signal_handlers()
        loop.close()
    root = recorder.finalize()
    assert result.stop_reason.startswith("e-stop: signal SIGINT") and result.ticks == 11
    assert again.ticks == 0 and again.stop_reason == "e-stop before the episode"  # no re-arming after one
    assert not (tmp_path / "data.partial").exists()
    dataset = LeRobotDataset("vla_rl/so101_deploy", root=root)
    assert dataset.num_episodes == 1 and dataset.num_frames == result.commands


def test_a_failing_policy_stops_the_robot_and_raises():
    def broken(observation):
        raise RuntimeError("CUDA out of memory")

    _, loop = make_loop(broken)
    with pytest.raises(PolicyError, match="CUDA out of memory"):
        loop.run_episode("stack")
    assert loop.safety.stopped
    loop.close()
    _, loop = make_loop(lambda observation: np.zeros((4, 3)))
    with pytest.raises(PolicyError, match=r"\[K, 2\]"):
        loop.run_episode("stack")
    loop.close()


def test_recorder_refuses_to_overwrite_unless_told(tmp_path):
    (tmp_path / "data").mkdir()
    features = dataset_features(FakePlatform(), ["front"], 16, use_videos=False, with_success=False)
    with pytest.raises(FileExistsError, match="overwrite"):
        EpisodeRecorder(DatasetConfig(root=str(tmp_path / "data")), 50, features, "fake")


def test_square_image_crops_the_centre_and_resizes():
    image = np.zeros((40, 60, 3), np.uint8)
    image[:, 10:50] = 255  # the centre square
    square = square_image(image, 20)
    assert square.shape == (20, 20, 3) and square.min() == 255


def test_timing_summaries():
    summary = summarize_ms([0.001 * k for k in range(1, 101)])
    assert summary["n"] == 100 and summary["p50_ms"] == pytest.approx(50.5) and summary["max_ms"] == 100
    assert summarize_ms([]) == {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    assert summarize_run([])["success_rate"] is None


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"fps": 0}, "fps"),
        ({"episode_time_s": -1.0}, "episode_time_s"),
        ({"replan_every": 0}, "replan_every"),
        ({"watchdog_periods": 1.0}, "watchdog_periods"),
        ({"camera_max_age_s": 0.0}, "camera_max_age_s"),
        ({"image_size": 8}, "image_size"),
    ],
)
def test_control_config_is_validated(overrides, match):
    with pytest.raises(ValueError, match=f"control.{match}"):
        ControlConfig(**overrides)
