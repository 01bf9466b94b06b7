"""The SO-101 platform: LeRobot's SO101Follower on the emulated bus, and the policy <-> robot units."""

import math
import time

import numpy as np
import pytest

from real.arm.config_so101 import So101Config
from real.arm.so101 import So101Platform
from real.robot import ROBOTS
from sim.emulators.feetech import CALIBRATION_DIR, CALIBRATION_ID, BusFaults, FeetechBusEmulator
from sim.emulators.protocol import Instruction, Packet
from sim.mujoco.so101.env import (
    So101BatchedEnv,
    joint_ranges,
    joints_to_normalized,
    normalized_to_joints,
)
from sim.mujoco.so101.model import load_model
from sim.mujoco.so101.tasks import So101Kinematics, initial_state, ready_pose

REPLY_TIMEOUT_MS = 250.0  # see tests/sim/emulators/test_so101_lerobot.py: a loaded test host


def emulated_config(emulator, **overrides):
    values = {
        "port": emulator.port,
        "id": CALIBRATION_ID,
        "calibration_dir": str(CALIBRATION_DIR),
        "reply_timeout_ms": REPLY_TIMEOUT_MS,
    }
    return So101Config(**(values | overrides))


@pytest.fixture
def arm():
    with FeetechBusEmulator() as emulator:
        platform = So101Platform(emulated_config(emulator))
        platform.connect()
        yield emulator, platform
        if platform.robot.bus.port_handler.is_open:
            platform.disconnect()


def test_registered_as_so101():
    assert ROBOTS.get("so101") is So101Platform
    with pytest.raises(KeyError, match="known robots: so101"):
        ROBOTS.get("so100")


def test_units_map_the_joint_ranges_onto_minus_one_one():
    platform = So101Platform(So101Config(port="/dev/null"))
    low, high = np.degrees(joint_ranges()).T
    last = np.zeros(6)  # absolute joint targets do not depend on the last command
    np.testing.assert_allclose(platform.to_robot(-np.ones(6), last), [*low[:5], 0.0])
    np.testing.assert_allclose(platform.to_robot(np.ones(6), last), [*high[:5], 100.0])
    for action in np.random.default_rng(0).uniform(-1, 1, (4, 6)):
        sent = platform.to_robot(action, last)
        np.testing.assert_allclose(platform.to_policy(sent), action)
        np.testing.assert_allclose(platform.action_to_policy(sent, last), action)
    assert platform.action_names == platform.state_names == tuple(key[:-4] for key in platform.action_keys)
    assert platform.action_keys == tuple(
        f"{m}.pos"
        for m in ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
    )


def test_ee_actions_are_the_simulators_twists_from_the_present_joints():
    platform = So101Platform(So101Config(port="/dev/null", action_mode="ee"))
    assert platform.action_names == ("ee.x", "ee.y", "ee.z", "ee.rx", "ee.ry", "ee.rz", "gripper")
    env = So101BatchedEnv(num_envs=1, tasks=["push"], cameras=(), action_mode="ee", autoreset_mode="Disabled")
    try:
        env.reset(options={"split": "eval", "init_state_ids": [0]})
        start = initial_state("push", "eval", 0).arm_qpos  # the first command's reference
        last = np.degrees(start)
        last[5] = 50.0 * (joints_to_normalized(start)[5] + 1.0)
        action = np.array([0.3, -0.2, 0.1, 0.0, 0.0, 0.2, 0.5])
        sent = platform.to_robot(action, last)
        expected = env._controls(action[None].astype(np.float64))[0]  # the sim's joint targets
    finally:
        env.close()
    np.testing.assert_allclose(sent[:5], np.degrees(expected[:5]), atol=1e-6)
    np.testing.assert_allclose(sent[5], 75.0)  # gripper target 0.5 -> 75 of 0..100
    # The deployment records the sent command as an action: the part of the twist the five joints can
    # follow. Replayed, it gives the same command, up to the controller's damping (which shortens the
    # step along the Jacobian's weakest direction by ~2% here).
    recorded = platform.action_to_policy(sent, last)
    assert recorded[6] == pytest.approx(0.5)
    step = np.abs(sent - last)[:5].max()
    assert np.abs(platform.to_robot(recorded, last) - sent)[:5].max() < 0.05 * step


def test_state_read_through_lerobot_is_the_simulators_state_of_the_same_pose(arm):
    emulator, platform = arm
    state = initial_state("pick_place", "eval", 0)
    emulator.set_qpos(state.scene_qpos(load_model()))
    observed = platform.state(platform.robot.get_observation())
    # One encoder tick is 0.088 degrees: well within 0.3 degrees of the joint's range.
    tolerance = np.radians(0.3) * 2 / np.diff(joint_ranges()).ravel()
    assert np.all(np.abs(observed - joints_to_normalized(state.arm_qpos)) < tolerance)


def test_a_policy_action_sent_through_lerobot_reaches_the_sim_joint_targets(arm):
    emulator, platform = arm
    action = joints_to_normalized(ready_pose() + np.array([0.3, -0.2, 0.2, -0.2, 0.5, -0.3]))
    command = platform.to_robot(action, platform.values(platform.robot.get_observation()))
    sent = platform.values(platform.robot.send_action(platform.action(command)))
    np.testing.assert_allclose(platform.to_policy(sent), action, atol=1e-9)
    target = normalized_to_joints(action)
    deadline = time.monotonic() + 5.0
    while True:
        error = np.array(list(emulator.joint_positions().values())) - target
        if np.abs(error).max() < math.radians(0.5):
            break
        assert time.monotonic() < deadline, f"joints did not reach the targets: error {error}"
        time.sleep(0.05)


def test_safety_limits_and_workspace_prediction():
    platform = So101Platform(So101Config(port="/dev/null", max_joint_speed_deg_s=100, max_gripper_speed=200))
    limits = platform.safety_limits(control_period_s=0.05, watchdog_timeout_s=0.075)
    np.testing.assert_allclose(limits.low, platform.to_robot(-np.ones(6), np.zeros(6)))
    np.testing.assert_allclose(limits.max_step, [5, 5, 5, 5, 5, 10])
    assert limits.watchdog_timeout_s == 0.075
    joints = ready_pose()
    values = platform.to_robot(joints_to_normalized(joints), np.zeros(6))
    np.testing.assert_allclose(platform.predict_position(values), So101Kinematics().tcp(joints), atol=1e-9)


def test_recover_link_drops_late_replies_from_the_input_buffer(arm):
    emulator, platform = arm
    # Later than all three tries (a reply arriving during a later try would be accepted, as on hardware).
    emulator.faults = BusFaults(latency_s=4 * REPLY_TIMEOUT_MS / 1000)
    with pytest.raises(ConnectionError):
        platform.robot.get_observation()
    emulator.faults = BusFaults()
    serial_port = platform.robot.bus.port_handler.ser
    deadline = time.monotonic() + 3.0
    while serial_port.in_waiting == 0:  # the late replies of the last try land in the buffer
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert platform.recover_link()
    assert serial_port.in_waiting == 0
    assert set(platform.robot.get_observation()) == set(platform.action_keys)


def test_replies_nobody_waits_for_are_dropped_before_the_next_read(arm):
    emulator, platform = arm
    handler = platform.robot.bus.port_handler
    handler.writePort(Packet(1, Instruction.PING).encode())  # as a retried read leaves replies behind
    deadline = time.monotonic() + 3.0
    while handler.ser.in_waiting < 6:  # a status packet without parameters: 6 bytes
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert platform.discard_stale_input() == 6
    assert platform.discard_stale_input() == 0
    observed = platform.state(platform.robot.get_observation())
    expected = joints_to_normalized(np.array(list(emulator.joint_positions().values())))
    assert np.abs(observed - expected).max() < 0.01


def test_an_uncalibrated_arm_is_an_error_not_a_prompt(tmp_path):
    with FeetechBusEmulator() as emulator:
        platform = So101Platform(emulated_config(emulator, calibration_dir=str(tmp_path)))
        with pytest.raises(RuntimeError, match="not calibrated"):
            platform.connect()


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"id": " "}, "robot.id"),
        ({"action_mode": "cartesian"}, "robot.action_mode must be one of joint, ee"),
        ({"reply_timeout_ms": 0.0}, "reply_timeout_ms"),
        ({"max_joint_speed_deg_s": -1.0}, "max_joint_speed_deg_s"),
        ({"num_read_retries": -1}, "num_read_retries"),
        ({"max_relative_target": 0.0}, "max_relative_target"),
        ({"workspace_low": [0.0, 0.0]}, "workspace_low"),
        ({"workspace_low": [1.0, 0.0, 0.0]}, "below workspace_high"),
    ],
)
def test_config_is_validated(overrides, match):
    with pytest.raises(ValueError, match=match):
        So101Config(**overrides)


def test_a_port_is_required():
    with pytest.raises(ValueError, match=r"robot\.port is not set"):
        So101Platform(So101Config())
