"""The single-key e-stop, fed through a pseudo-terminal: in the safety layer and in `vla-rl-deploy`."""

import json
import os
import pty
import subprocess
import sys
import termios
import threading
import time

import numpy as np
import pytest

from real.keyboard import KeyEstop, describe_keys
from real.safety import SafetyLayer, SafetyLimits
from tests.vla_rl.test_hil import save_tiny_policy

WAIT_S = 30.0  # bounds on waiting on a loaded host, not timing claims
START_WAIT_S = 600.0  # a CLI importing torch and LeRobot on a busy 2-core host (300 s seen)


def wait_for(condition, what, timeout_s=WAIT_S, output=None):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}" + (
            f"; output:\n{''.join(output)}" if output is not None else ""
        )
        time.sleep(0.01)


@pytest.fixture
def terminal():
    master, slave = pty.openpty()
    yield master, slave
    os.close(master)
    os.close(slave)


def make_layer():
    stops = []
    layer = SafetyLayer(SafetyLimits(low=[-1.0], high=[1.0]), on_stop=stops.append)
    layer.reset(np.zeros(1))
    return layer, stops


def test_one_key_press_without_enter_is_an_estop(terminal):
    master, slave = terminal
    layer, stops = make_layer()
    with KeyEstop(layer.estop, "q ", fd=slave) as keys:
        assert keys.active
        os.write(master, b"xyz")  # other keys do nothing
        os.write(master, b"q")  # no newline: cbreak mode hands over single keys
        wait_for(lambda: layer.stopped, "the e-stop")
    assert stops == ["e-stop: key 'q'"] and layer.counts["estop"] == 1 and keys.presses == 1
    filtered, applied = layer.filter(np.array([0.5]), now=0.0)
    assert applied == ("stopped",) and filtered[0] == 0.0  # holds until reset


def test_space_stops_too_and_each_press_is_counted(terminal):
    master, slave = terminal
    layer, stops = make_layer()
    with KeyEstop(layer.estop, "q ", fd=slave) as keys:
        os.write(master, b" ")
        wait_for(lambda: layer.stopped, "the e-stop")
        os.write(master, b"q")
        wait_for(lambda: keys.presses == 2, "the second press")
    assert stops == ["e-stop: key ' '"] and layer.counts["estop"] == 2  # one stop, two interventions


def test_the_terminal_is_in_cbreak_mode_while_listening_and_restored_after(terminal):
    _, slave = terminal
    before = termios.tcgetattr(slave)
    keys = KeyEstop(lambda reason: None, fd=slave)
    assert keys.start()
    local_modes = termios.tcgetattr(slave)[3]
    assert not local_modes & termios.ICANON and not local_modes & termios.ECHO
    assert local_modes & termios.ISIG  # Ctrl-C still sends SIGINT (the signal e-stop)
    keys.stop()
    keys.stop()  # idempotent
    assert termios.tcgetattr(slave) == before and not keys.active


def test_nothing_happens_without_a_terminal():
    read_end, write_end = os.pipe()
    try:
        keys = KeyEstop(lambda reason: None, fd=read_end)
        assert not keys.start() and not keys.active
        keys.stop()
    finally:
        os.close(read_end)
        os.close(write_end)


@pytest.mark.parametrize("keys", ["", "q\n", "\x03"])
def test_keys_must_be_printable(keys):
    with pytest.raises(ValueError, match="printable"):
        KeyEstop(lambda reason: None, keys)


def test_describe_keys():
    assert describe_keys("q ") == "q or space"


@pytest.mark.slow
def test_vla_rl_deploy_stops_at_a_key_press_and_leaves_a_valid_dataset(tmp_path, terminal):
    """`vla-rl-deploy` on the emulated SO-101 with stdin a terminal: `q` ends the run cleanly."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from sim.emulators.camera_server import MjpegCameraServer
    from sim.emulators.feetech import CALIBRATION_DIR, CALIBRATION_ID, FeetechBusEmulator

    master, slave = terminal
    before = termios.tcgetattr(slave)
    policy = save_tiny_policy(tmp_path / "policy")
    with (
        FeetechBusEmulator() as bus,
        MjpegCameraServer(bus.scene_name, width=32, height=32) as cameras,
    ):
        command = [
            sys.executable,
            "-m",
            "vla_rl.cli.deploy",
            f"robot.port={bus.port}",
            f"robot.id={CALIBRATION_ID}",
            f"robot.calibration_dir={CALIBRATION_DIR}",
            f"robot.cameras.front='{cameras.url('front')}'",
            f"robot.cameras.wrist='{cameras.url('wrist')}'",
            "robot.reply_timeout_ms=250",
            f"policy.path={policy}",
            "task=push the red block into the green zone",
            "episodes=2",
            "control.fps=10",
            "control.episode_time_s=120",
            "control.image_size=32",
            f"dataset.root={tmp_path / 'dataset'}",
            "dataset.use_videos=false",
            f"run_dir={tmp_path / 'run'}",
        ]
        process = subprocess.Popen(
            command, stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
        reader.start()
        try:
            hint = "e-stop: press q or space"
            wait_for(lambda: any(hint in line for line in lines), "the key hint", START_WAIT_S, lines)
            wait_for(lambda: any("episode 1/2" in line for line in lines), "the episode", WAIT_S, lines)
            time.sleep(1.0)  # let it send some commands
            os.write(master, b"q")
            returncode = process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
        reader.join(timeout=10)
    output = "".join(lines)
    assert returncode == 0, output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["episodes"] == 1 and report["stops"] == ["e-stop: key 'q'"], output
    assert report["safety_interventions"]["estop"] == 1
    dataset = LeRobotDataset("vla_rl/so101_deploy", root=tmp_path / "dataset")
    assert dataset.num_episodes == 1 and 0 < dataset.num_frames <= report["episode_results"][0]["commands"]
    assert termios.tcgetattr(slave) == before  # the terminal got its settings back
