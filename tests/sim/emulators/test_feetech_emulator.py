"""The emulated bus, driven packet by packet over its pseudo-terminal as a driver would."""

import json
import math
import os
import time

import pytest
import serial

from sim.emulators.feetech import (
    CALIBRATION_PATH,
    TICKS_PER_RAD,
    ZERO_TICKS,
    BusFaults,
    FeetechBusEmulator,
    load_calibration,
)
from sim.emulators.protocol import BROADCAST_ID, Instruction, Packet, PacketError, PacketReader
from sim.emulators.sts3215 import MODEL_NUMBER

PING, READ, WRITE = Instruction.PING, Instruction.READ, Instruction.WRITE
PRESENT_POSITION, GOAL_POSITION, TORQUE_ENABLE = 56, 42, 40


@pytest.fixture
def bus():
    with FeetechBusEmulator() as emulator, serial.Serial(emulator.port, 1_000_000, timeout=0) as port:
        yield emulator, port


def exchange(port, packet, replies, timeout=2.0):
    """Send a packet (or raw bytes) and collect ``replies`` status packets."""
    port.write(packet.encode() if isinstance(packet, Packet) else packet)
    reader, received = PacketReader(), []
    deadline = time.monotonic() + timeout
    while len(received) < replies and time.monotonic() < deadline:
        received += reader.feed(port.read(256), time.monotonic())
    return received


def word(value):
    return value.to_bytes(2, "little")


def test_ping_and_read_model_number(bus):
    _, port = bus
    assert exchange(port, Packet(3, PING), 1) == [Packet(3, 0)]
    assert exchange(port, Packet(3, READ, bytes([3, 2])), 1) == [Packet(3, 0, word(MODEL_NUMBER))]


def test_broadcast_ping_is_answered_by_every_servo(bus):
    _, port = bus
    assert [p.id for p in exchange(port, Packet(BROADCAST_ID, PING), 6)] == [1, 2, 3, 4, 5, 6]


def test_present_position_reflects_the_joint_angle(bus):
    emulator, port = bus
    (reply,) = exchange(port, Packet(1, READ, bytes([PRESENT_POSITION, 2])), 1)
    angle = emulator.joint_positions()["shoulder_pan"]
    homing = load_calibration(CALIBRATION_PATH)["shoulder_pan"]["homing_offset"]
    # Present = round(zero + angle * 4096 / 2pi) - homing (no wrap in this range)
    expected = round(ZERO_TICKS["shoulder_pan"] + angle * TICKS_PER_RAD) - homing
    assert abs(int.from_bytes(reply.params, "little") - expected) <= 1


def test_goal_position_moves_the_joint_with_torque_on(bus):
    emulator, port = bus
    goal = 2048 + 400  # present 2048 is the joint's zero: +400 ticks = 0.6136 rad
    assert exchange(port, Packet(1, WRITE, bytes([TORQUE_ENABLE, 1])), 1) == [Packet(1, 0)]
    assert exchange(port, Packet(1, WRITE, bytes([GOAL_POSITION]) + word(goal)), 1) == [Packet(1, 0)]
    wait_for(lambda: abs(emulator.joint_positions()["shoulder_pan"] - 400 / TICKS_PER_RAD) < 0.005, hold=0.2)
    (reply,) = exchange(port, Packet(1, READ, bytes([PRESENT_POSITION, 2])), 1)
    assert abs(int.from_bytes(reply.params, "little") - goal) <= 10


def test_goal_is_clipped_to_the_position_limits(bus):
    emulator, port = bus
    limits = load_calibration(CALIBRATION_PATH)["elbow_flex"]
    exchange(port, Packet(3, WRITE, bytes([TORQUE_ENABLE, 1])), 1)
    exchange(port, Packet(3, WRITE, bytes([GOAL_POSITION]) + word(4000)), 1)
    assert emulator.register(3, "Goal_Position") == 4000
    high = (limits["range_max"] - 2048) / TICKS_PER_RAD
    wait_for(lambda: abs(emulator.joint_positions()["elbow_flex"] - high) < 0.01, hold=0.2)


def test_sync_read_and_sync_write(bus):
    emulator, port = bus
    ids = [1, 2, 3, 4, 5, 6]
    replies = exchange(port, Packet(BROADCAST_ID, Instruction.SYNC_READ, bytes([5, 1, *reversed(ids)])), 6)
    assert [(p.id, p.params) for p in replies] == [(i, bytes([i])) for i in reversed(ids)]

    data = b"".join(bytes([i, 20 + i]) for i in ids)
    port.write(Packet(BROADCAST_ID, Instruction.SYNC_WRITE, bytes([21, 1]) + data).encode())
    assert exchange(port, Packet(6, PING), 1) == [Packet(6, 0)]  # no status packet came before it
    assert [emulator.register(i, "P_Coefficient") for i in ids] == [21, 22, 23, 24, 25, 26]


def test_broadcast_write_executes_without_answers(bus):
    emulator, port = bus
    port.write(Packet(BROADCAST_ID, WRITE, bytes([TORQUE_ENABLE, 1])).encode())
    assert exchange(port, Packet(2, PING), 1) == [Packet(2, 0)]
    assert all(emulator.register(i, "Torque_Enable") == 1 for i in range(1, 7))


def test_reg_write_waits_for_action(bus):
    emulator, port = bus
    assert exchange(port, Packet(4, Instruction.REG_WRITE, bytes([21, 9])), 1) == [Packet(4, 0)]
    assert emulator.register(4, "P_Coefficient") == 32
    port.write(Packet(BROADCAST_ID, Instruction.ACTION).encode())
    exchange(port, Packet(4, PING), 1)
    assert emulator.register(4, "P_Coefficient") == 9


def test_status_level_zero_answers_only_ping_and_read(bus):
    _, port = bus
    port.write(Packet(5, WRITE, bytes([8, 0])).encode())  # Response_Status_Level = 0: no answer to it
    port.write(Packet(5, WRITE, bytes([21, 10])).encode())
    assert exchange(port, Packet(5, READ, bytes([21, 1])), 1) == [Packet(5, 0, bytes([10]))]


def test_id_change_answers_from_the_old_id(bus):
    emulator, port = bus
    assert exchange(port, Packet(6, WRITE, bytes([5, 9])), 1) == [Packet(6, 0)]
    assert exchange(port, Packet(9, PING), 1) == [Packet(9, 0)]
    assert emulator.register(9, "Model_Number") == MODEL_NUMBER


def test_invalid_input_is_ignored_and_the_bus_keeps_answering(bus):
    emulator, port = bus
    corrupt = bytearray(Packet(1, PING).encode())
    corrupt[-1] ^= 0x55
    port.write(b"\x00garbage" + bytes(corrupt))  # noise, then a bad checksum: no answer
    port.write(Packet(1, 0x7F).encode())  # unknown instruction
    port.write(Packet(1, READ, bytes([80, 20])).encode())  # beyond the control table
    port.write(Packet(1, READ, bytes([56])).encode())  # missing a parameter
    port.write(Packet(BROADCAST_ID, Instruction.SYNC_WRITE, bytes([42, 2, 1, 0])).encode())  # short data
    assert exchange(port, Packet(1, PING), 1) == [Packet(1, 0)]
    counts = emulator.counts
    assert counts["rejected_checksum"] == 1 and counts["rejected_noise"] >= 1 and counts["invalid"] == 4


def test_faults_drop_corrupt_and_silence_replies(bus):
    emulator, port = bus
    emulator.faults = BusFaults(drop_rate=1.0)
    assert exchange(port, Packet(1, PING), 1, timeout=0.1) == []
    emulator.faults = BusFaults(corrupt_rate=1.0)
    port.write(Packet(1, PING).encode())
    wait_for(lambda: port.in_waiting >= 6)
    with pytest.raises(PacketError, match="checksum"):
        Packet.decode(port.read(6))
    emulator.faults = BusFaults(silent_ids=frozenset({2}))
    replies = exchange(port, Packet(BROADCAST_ID, PING), 6, timeout=0.2)
    assert [p.id for p in replies] == [1, 3, 4, 5, 6]
    emulator.faults = BusFaults(latency_s=0.05)
    start = time.monotonic()
    assert exchange(port, Packet(1, PING), 1) == [Packet(1, 0)]
    assert time.monotonic() - start >= 0.05
    assert emulator.counts["replies_dropped"] == 1 and emulator.counts["replies_corrupted"] == 1


@pytest.mark.parametrize(
    ("faults", "match"),
    [
        ({"latency_s": -1.0}, "latency_s"),
        ({"latency_s": math.inf}, "latency_s"),
        ({"drop_rate": 1.5}, "drop_rate"),
        ({"corrupt_rate": -0.1}, "corrupt_rate"),
        ({"silent_ids": {3}}, "silent_ids"),
        ({"silent_ids": frozenset({300})}, "silent_ids"),
    ],
)
def test_faults_are_validated(faults, match):
    with pytest.raises(ValueError, match=match):
        BusFaults(**faults)


def test_close_stops_the_process_and_removes_the_terminal():
    emulator = FeetechBusEmulator().start()
    port, process = emulator.port, emulator._device.process
    assert os.path.exists(port)
    emulator.close()
    emulator.close()  # idempotent
    assert not process.is_alive() and process.exitcode == 0
    assert not os.path.exists(port)
    with pytest.raises(RuntimeError, match="not running"):
        _ = emulator.port
    with pytest.raises(RuntimeError, match="not running"):
        emulator.joint_positions()


def test_controller_errors_are_raised_in_the_caller(bus):
    emulator, _ = bus
    with pytest.raises(KeyError, match="no servo has id 9"):
        emulator.register(9, "ID")
    with pytest.raises(KeyError, match="Goal"):
        emulator.register(1, "Goal")
    with pytest.raises(TypeError, match="BusFaults"):
        emulator.faults = {"drop_rate": 1.0}


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: c.pop("gripper"), "one entry per motor"),
        (lambda c: c["elbow_flex"].update(id=7), "id 7"),
        (lambda c: c["wrist_flex"].update(range_min=4000), "range_min < range_max"),
        (lambda c: c["wrist_flex"].update(homing_offset=3000), "homing_offset"),
        (lambda c: c["wrist_flex"].update(homing_offset=1.5), "integers"),
        (lambda c: c["wrist_flex"].pop("drive_mode"), "exactly the fields"),
    ],
)
def test_calibration_files_are_validated(tmp_path, edit, match):
    content = json.loads(CALIBRATION_PATH.read_text())
    edit(content)
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=match):
        FeetechBusEmulator(calibration=path)


def wait_for(condition, timeout=5.0, hold=0.0):
    """Wait until ``condition()`` is true (and stays true for ``hold`` seconds: servos overshoot)."""
    deadline, since = time.monotonic() + timeout, None
    while since is None or time.monotonic() - since < hold:
        assert time.monotonic() < deadline, "condition not met in time"
        since = (since or time.monotonic()) if condition() else None
        time.sleep(0.01)
