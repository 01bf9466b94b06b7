"""LeRobot's own SO101Follower driving the emulated arm: only the port name differs from hardware."""

import math
import time

import pytest

from sim.emulators.feetech import CALIBRATION_DIR, CALIBRATION_ID, BusFaults, FeetechBusEmulator
from sim.mujoco.so101.model import MOTOR_NAMES

BODY_JOINTS = MOTOR_NAMES[:-1]
# LeRobot waits ~50 ms for each status packet (its patched PortHandler.setPacketTimeout: 50 ms + wire time).
# A servo answers within microseconds; the emulator process answers within ~10 ms (p99 ~5 ms), but on a
# shared, loaded test host (load 4-5 on 2 cores) any process can be scheduled 50-100 ms late, which made
# `connect()` (~120 transactions) fail now and then. The tests keep LeRobot's formula with a wider margin;
# the fault tests still go through the same timeout path, only slower.
REPLY_TIMEOUT_MS = 250.0


def make_robot(port):
    from lerobot.robots.so_follower import SO101Follower, SO101FollowerConfig

    config = SO101FollowerConfig(port=port, id=CALIBRATION_ID, calibration_dir=CALIBRATION_DIR)
    robot = SO101Follower(config)
    handler = robot.bus.port_handler

    def set_packet_timeout(packet_length):
        handler.packet_start_time = handler.getCurrentTime()
        handler.packet_timeout = handler.tx_time_per_byte * (packet_length + 3) + REPLY_TIMEOUT_MS

    handler.setPacketTimeout = set_packet_timeout
    return robot


@pytest.fixture
def arm():
    with FeetechBusEmulator() as emulator:
        robot = make_robot(emulator.port)
        robot.connect()  # calibrate=True: would prompt (and fail under pytest) if the arm looked uncalibrated
        yield emulator, robot
        if robot.is_connected:
            robot.disconnect()


def degrees(emulator):
    return {name: math.degrees(angle) for name, angle in emulator.joint_positions().items()}


def test_connect_configures_the_servos_as_on_hardware(arm):
    emulator, robot = arm
    assert robot.is_connected and robot.is_calibrated
    for servo_id in range(1, 7):
        assert emulator.register(servo_id, "Torque_Enable") == 1
        assert emulator.register(servo_id, "Lock") == 1
        assert emulator.register(servo_id, "Operating_Mode") == 0
        assert emulator.register(servo_id, "P_Coefficient") == 16
        assert emulator.register(servo_id, "D_Coefficient") == 32
        assert emulator.register(servo_id, "Return_Delay_Time") == 0
        assert emulator.register(servo_id, "Maximum_Acceleration") == 254
        assert emulator.register(servo_id, "Phase") & 0x10 == 0
    assert emulator.register(6, "Max_Torque_Limit") == 500
    assert emulator.register(6, "Protection_Current") == 250


def test_observation_reads_the_simulated_joints(arm):
    emulator, robot = arm
    observation = robot.get_observation()
    assert set(observation) == {f"{name}.pos" for name in MOTOR_NAMES}
    actual = degrees(emulator)
    # The shipped calibration centres each body joint's range on its zero: LeRobot's degrees are the
    # joint's degrees (to 4095 / 4096) up to one encoder tick (0.09 degrees).
    for name in BODY_JOINTS:
        assert observation[f"{name}.pos"] == pytest.approx(actual[name], abs=0.3)


def test_send_action_moves_the_simulated_joints(arm):
    emulator, robot = arm
    action = dict(robot.get_observation())
    targets = {"shoulder_pan": 30.0, "shoulder_lift": -60.0, "elbow_flex": 60.0, "wrist_flex": -20.0}
    action |= {f"{name}.pos": value for name, value in targets.items()}
    action["gripper.pos"] = 50.0
    sent = robot.send_action(action)
    assert sent == {key: pytest.approx(value) for key, value in action.items()}

    # The servos overshoot a little (~10 %) on the way: wait until the joints stay on target for 0.2 s.
    deadline, settled_since = time.monotonic() + 5.0, None
    while settled_since is None or time.monotonic() - settled_since < 0.2:
        assert time.monotonic() < deadline, f"joints did not settle at {targets}: {degrees(emulator)}"
        on_target = all(abs(degrees(emulator)[name] - target) < 0.5 for name, target in targets.items())
        settled_since = (settled_since or time.monotonic()) if on_target else None
        time.sleep(0.01)
    # Gripper 50 % of its range [-10, 100] degrees = 45 degrees.
    assert degrees(emulator)["gripper"] == pytest.approx(45.0, abs=1.0)
    observation = robot.get_observation()
    for name, target in targets.items():
        assert observation[f"{name}.pos"] == pytest.approx(target, abs=0.5)


def test_disconnect_disables_torque(arm):
    emulator, robot = arm
    robot.disconnect()
    assert all(emulator.register(servo_id, "Torque_Enable") == 0 for servo_id in range(1, 7))


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("faults", "message"),
    [
        (BusFaults(drop_rate=1.0), "There is no status packet"),
        (BusFaults(corrupt_rate=1.0), "Incorrect status packet"),
        # Later than all three tries: a reply that arrives during a later try is accepted (as on hardware).
        (BusFaults(latency_s=4 * REPLY_TIMEOUT_MS / 1000), "There is no status packet"),
        (BusFaults(silent_ids=frozenset({4})), "There is no status packet"),
    ],
)
def test_faulty_replies_make_the_driver_retry_then_raise(arm, faults, message):
    emulator, robot = arm
    emulator.faults = faults
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=message):
        robot.get_observation()
    assert time.monotonic() - start < 30  # bounded: it gives up instead of hanging (no timing claim)
    if faults.drop_rate:  # 1 try + num_read_retries (2), 6 replies each
        assert emulator.counts["replies_dropped"] == 18
    robot.bus.port_handler.closePort()  # late replies may still be on their way: unplug, don't disconnect


@pytest.mark.timeout(20)
def test_driver_recovers_when_the_faults_clear(arm):
    emulator, robot = arm
    emulator.faults = BusFaults(drop_rate=1.0)
    with pytest.raises(ConnectionError):
        robot.get_observation()
    emulator.faults = BusFaults(latency_s=0.02)  # slow but within the driver's timeout
    assert set(robot.get_observation()) == {f"{name}.pos" for name in MOTOR_NAMES}


@pytest.mark.timeout(20)
def test_connect_names_a_servo_that_does_not_answer():
    with FeetechBusEmulator() as emulator:
        emulator.faults = BusFaults(silent_ids=frozenset({3}))
        robot = make_robot(emulator.port)
        with pytest.raises(RuntimeError, match=r"Missing motor IDs:\n  - 3"):
            robot.connect()
        robot.bus.port_handler.closePort()
