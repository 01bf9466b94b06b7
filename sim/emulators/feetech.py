"""A Feetech STS3215 servo bus on a pseudo-terminal, backed by the MuJoCo SO-101 arm.

`FeetechBusEmulator` opens a pseudo-terminal whose slave path (`FeetechBusEmulator.port`) is what a
driver opens as its serial port (LeRobot's `FeetechMotorsBus` / `SO101Follower` included). Six emulated
servos (ids 1..6, one per joint of `sim.mujoco.so101`) answer protocol-0 packets as the STS3215 does,
while the MuJoCo arm is stepped in real time between packets, in a child process of its own.

How a servo maps to its joint, as the real one does:

- its encoder reads ``raw = zero_ticks + angle * 4096 / 2pi`` (mod 4096), where ``zero_ticks`` is where
  the horn happens to sit on the servo (`ZERO_TICKS`);
- ``Present_Position = (raw - Homing_Offset) mod 4096``;
- in position mode with torque on, the servo drives its encoder to
  ``(clip(Goal_Position, Min_Position_Limit, Max_Position_Limit) + Homing_Offset) mod 4096``, with a
  stiffness proportional to P_Coefficient and damping proportional to D_Coefficient, up to the stall
  torque; with torque off the joint is limp; switching torque on holds the present position.

At power-up the servos hold the calibration in ``so101_emulated.json`` (LeRobot's calibration format,
`CALIBRATION_DIR` / `CALIBRATION_ID`), so LeRobot finds the arm calibrated and never prompts. With it,
LeRobot's degrees are the MuJoCo joint angles in degrees (to 0.03 %), and the gripper's 0..100 spans its
joint range (0 closed). Faults (`BusFaults`: reply latency, dropped or corrupted replies, servos that stop
answering) can be changed at any time by assigning `FeetechBusEmulator.faults`.

The scene's joint positions (arm and block) are mirrored in shared memory (`SceneMirror`) after every
batch of physics steps, so other processes (the MJPEG camera server, `sim.emulators.camera_server`) can
render or score the scene without a round trip through the emulator; `FeetechBusEmulator.set_qpos`
puts the scene in a given state (an episode's initial state, as a person resets a real table).

Not modelled: baud rates (the pseudo-terminal carries any), Return_Delay_Time, velocity / acceleration
profiles (Goal_Velocity, Acceleration), torque limits other than the stall torque, operating modes other
than position mode, and EPROM persistence across power cycles (Lock is stored, not enforced).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import select
import time
import tty
from collections import Counter, deque
from dataclasses import dataclass
from multiprocessing import shared_memory
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import mujoco
import numpy as np

from sim.emulators.process import DeviceProcess
from sim.emulators.protocol import BROADCAST_ID, Instruction, Packet, PacketReader
from sim.emulators.sts3215 import REGISTERS, TICKS_PER_TURN, RegisterError, Sts3215
from sim.mujoco.so101.model import MOTOR_IDS, MOTOR_NAMES, REST_KEYFRAME, So101Indices, load_model

logger = logging.getLogger(__name__)

CALIBRATION_DIR = Path(__file__).parent
CALIBRATION_ID = "so101_emulated"
CALIBRATION_PATH = CALIBRATION_DIR / f"{CALIBRATION_ID}.json"

# Encoder reading (before the homing offset) of each servo at its joint's zero angle.
ZERO_TICKS: dict[str, int] = {
    "shoulder_pan": 1530,
    "shoulder_lift": 2650,
    "elbow_flex": 1320,
    "wrist_flex": 2400,
    "wrist_roll": 2000,
    "gripper": 2700,
}
TICKS_PER_RAD = TICKS_PER_TURN / (2 * math.pi)
KP_PER_P = 62.0  # N m / rad per unit of P_Coefficient (P = 16, LeRobot's setting, gives ~1000)
KV_PER_D = 0.085  # N m s / rad per unit of D_Coefficient
STALL_TORQUE = 2.94  # N m, the model's actuator forcerange
STALL_CURRENT = 415  # Present_Current units (6.5 mA) at stall
MOVING_TICKS_PER_S = 20  # |Present_Velocity| above which Moving reads 1
PHYSICS_PERIOD_S = 0.004  # the emulator wakes at least this often to step the physics
STEPS_PER_TURN = 5  # physics steps between two looks at the bus
MAX_LAG_STEPS = 50  # beyond this lag the simulation drops wall time instead of racing to catch up
CALIBRATION_FIELDS = ("id", "drive_mode", "homing_offset", "range_min", "range_max")


@dataclass(frozen=True)
class BusFaults:
    """Faults the emulated bus injects into its replies.

    Attributes:
        latency_s: delay before each reply (the driver's own timeout is ~50 ms per packet).
        drop_rate: probability that a status packet is lost.
        corrupt_rate: probability that a status packet arrives with a wrong checksum.
        silent_ids: servos that neither execute nor answer anything (a cut cable).

    """

    latency_s: float = 0.0
    drop_rate: float = 0.0
    corrupt_rate: float = 0.0
    silent_ids: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if not (math.isfinite(self.latency_s) and self.latency_s >= 0):
            raise ValueError(f"latency_s must be a finite number >= 0, got {self.latency_s}")
        for name in ("drop_rate", "corrupt_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not isinstance(self.silent_ids, frozenset) or not all(
            isinstance(i, int) and 0 <= i <= 253 for i in self.silent_ids
        ):
            raise ValueError(f"silent_ids must be a frozenset of servo ids 0..253, got {self.silent_ids!r}")


class SceneMirror:
    """The emulated scene's ``qpos`` and simulation time in shared memory: one writer, any readers.

    The emulator process writes after each batch of physics steps; readers in any process get a
    consistent copy (a sequence counter, odd while a write is in progress, makes torn reads retry).
    The creator owns the memory and unlinks it in `close`; others attach by `name`.
    """

    def __init__(self, nq: int, name: str | None = None) -> None:
        """Create a mirror for ``nq`` positions (``name`` None) or attach to the one called ``name``."""
        if nq < 1:
            raise ValueError(f"nq must be >= 1, got {nq}")
        size = 8 * (2 + nq)
        self._owner = name is None
        self._memory = shared_memory.SharedMemory(name=name, create=self._owner, size=size)
        if self._memory.size < size:
            self._memory.close()
            raise ValueError(f"shared memory {name!r} holds {self._memory.size} bytes, a mirror needs {size}")
        self._values: np.ndarray = np.ndarray((2 + nq,), np.float64, self._memory.buf)
        if self._owner:
            self._values[:] = 0.0
        self.nq = nq

    @property
    def name(self) -> str:
        """The shared memory's name, to attach from another process."""
        return self._memory.name

    def write(self, qpos: np.ndarray, time_s: float) -> None:
        """Publish ``qpos`` ``[nq]`` at simulation time ``time_s`` (one writer only)."""
        self._values[0] += 1.0
        self._values[1] = time_s
        self._values[2:] = qpos
        self._values[0] += 1.0

    def read(self) -> tuple[np.ndarray, float]:
        """A consistent copy of ``(qpos [nq], simulation time)``; before the first write both are zero.

        Raises:
            RuntimeError: a write stayed unfinished for a second (its writer died in the middle of it).

        """
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            sequence = self._values[0]
            if sequence % 2 == 0:
                time_s, qpos = float(self._values[1]), self._values[2:].copy()
                if self._values[0] == sequence:
                    return qpos, time_s
            time.sleep(0)
        raise RuntimeError(f"scene mirror {self.name}: a write never finished (its writer is gone)")

    def close(self) -> None:
        """Detach; the creator also frees the memory."""
        del self._values
        self._memory.close()
        if self._owner:
            self._memory.unlink()


def load_calibration(path: Path) -> dict[str, dict[str, int]]:
    """Read and check a LeRobot SO-101 calibration file (motor name -> id, drive_mode, homing_offset, ...).

    Raises:
        ValueError: the file does not describe the six SO-101 servos with values a servo can hold.

    """
    content = json.loads(path.read_text())
    if not isinstance(content, dict) or set(content) != set(MOTOR_NAMES):
        raise ValueError(f"{path}: expected one entry per motor {MOTOR_NAMES}")
    for name, entry in content.items():
        if not isinstance(entry, dict) or set(entry) != set(CALIBRATION_FIELDS):
            raise ValueError(f"{path}: {name} must have exactly the fields {CALIBRATION_FIELDS}")
        if not all(isinstance(entry[field], int) for field in CALIBRATION_FIELDS):
            raise ValueError(f"{path}: {name}'s fields must be integers, got {entry}")
        if entry["id"] != MOTOR_IDS[name]:
            raise ValueError(f"{path}: {name} has id {entry['id']}, the arm has it at {MOTOR_IDS[name]}")
        if not 0 <= entry["range_min"] < entry["range_max"] < TICKS_PER_TURN:
            raise ValueError(f"{path}: {name} needs 0 <= range_min < range_max < {TICKS_PER_TURN}")
        if abs(entry["homing_offset"]) > 2047:
            raise ValueError(f"{path}: {name}'s homing_offset must be in -2047..2047")
    return content


class FeetechBusEmulator:
    """Six STS3215 servos of a MuJoCo SO-101 arm on a pseudo-terminal, run in their own process.

    The emulated bus runs in a child process of its own, as a servo is a device of its own: its answers
    never wait for the interpreter lock of the driver, which busy-waits for them. This object starts,
    controls and stops it. Use it as a context manager (or call `start` and `close`)::

        with FeetechBusEmulator() as bus:
            robot = SO101Follower(SO101FollowerConfig(port=bus.port, id=CALIBRATION_ID,
                                                      calibration_dir=CALIBRATION_DIR))

    """

    def __init__(self, calibration: Path = CALIBRATION_PATH, seed: int = 0) -> None:
        """Describe an arm that powers up in its rest pose, torque off, holding ``calibration``.

        Args:
            calibration: a LeRobot calibration file for the six servos (checked now).
            seed: seeds the random draws of dropped and corrupted replies.

        """
        self._calibration = load_calibration(calibration)
        self._seed = seed
        self._faults = BusFaults()
        # Children of the fork server are forked from a clean, single-threaded process that has already
        # imported this module: they start in milliseconds (the first start launches the server).
        self._device = DeviceProcess("the emulator", preload=[__name__])
        self._port: str | None = None
        self._mirror: SceneMirror | None = None

    @property
    def faults(self) -> BusFaults:
        """The faults injected now; assign a new `BusFaults` to change them (running or not)."""
        return self._faults

    @faults.setter
    def faults(self, faults: BusFaults) -> None:
        self.inject(faults)

    def inject(self, faults: BusFaults) -> float | None:
        """Set the faults; return the ``time.monotonic()`` at which the running emulator applied them.

        That time is the emulator process's own (the clock is system-wide), so it does not include the
        delay of the request reaching a busy emulator; None when the emulator is not running.
        """
        if not isinstance(faults, BusFaults):
            raise TypeError(f"faults must be a BusFaults, got {type(faults).__name__}")
        applied_at = self._call("faults", faults) if self._device.running else None
        self._faults = faults
        return applied_at

    @property
    def port(self) -> str:
        """The serial port path a driver opens (the pseudo-terminal's slave)."""
        if self._port is None:
            raise RuntimeError("the emulator is not running: call start() or use it as a context manager")
        return self._port

    @property
    def counts(self) -> dict[str, int]:
        """Bus statistics: packets, replies, replies_dropped / _corrupted, invalid, rejected_<reason>."""
        return self._call("counts")

    def start(self) -> Self:
        """Start the emulator process; return once its port is open."""
        if self._device.running:
            raise RuntimeError("the emulator is already running")
        self._mirror = SceneMirror(load_model().nq)
        args = (self._calibration, self._seed, self._faults, self._mirror.name)
        try:
            self._port = self._device.start(_serve, args, name="feetech-bus-emulator")
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop the emulator process (which closes its pseudo-terminal); it can be started again."""
        self._port = None
        self._device.close()
        if self._mirror is not None:
            self._mirror.close()
            self._mirror = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def joint_positions(self) -> dict[str, float]:
        """The arm's joint angles in radians, by motor name."""
        return self._call("joint_positions")

    @property
    def scene_name(self) -> str:
        """Name of the shared memory mirroring the scene's ``qpos`` (attach with `SceneMirror`)."""
        if self._mirror is None:
            raise RuntimeError("the emulator is not running: call start() or use it as a context manager")
        return self._mirror.name

    def qpos(self) -> np.ndarray:
        """The scene's ``qpos`` ``[nq]`` now (block free joint, then the arm's joints; see the model)."""
        if self._mirror is None:
            raise RuntimeError("the emulator is not running: call start() or use it as a context manager")
        return self._mirror.read()[0]

    def set_qpos(self, qpos: np.ndarray) -> None:
        """Put the scene at rest at ``qpos`` ``[nq]``; servos with torque on hold their joints there.

        Raises:
            ValueError: ``qpos`` has the wrong size or non-finite values.

        """
        values = np.asarray(qpos, dtype=np.float64)
        if self._mirror is not None and values.shape != (self._mirror.nq,):
            raise ValueError(f"qpos must have shape ({self._mirror.nq},), got {values.shape}")
        if not np.all(np.isfinite(values)):
            raise ValueError("qpos must be finite")
        self._call("set_qpos", values)

    def register(self, servo_id: int, name: str) -> int:
        """A register of the servo that has ``servo_id`` now, as the bus would read it (signed)."""
        return self._call("register", servo_id, name)

    def _call(self, *request: Any) -> Any:
        return self._device.call(*request)


def _serve(
    connection: Connection,
    calibration: dict[str, dict[str, int]],
    seed: int,
    faults: BusFaults,
    mirror_name: str,
) -> None:
    """The emulator process: open the pseudo-terminal, then run the arm until the controller says close."""
    arm = _EmulatedArm(calibration, seed, faults, SceneMirror(load_model().nq, mirror_name))
    master, slave = os.openpty()
    tty.setraw(slave)  # no echo, no line discipline: bytes pass as they are
    os.set_blocking(master, False)
    try:
        connection.send((True, os.ttyname(slave)))
        arm.run(master, connection)
    finally:
        os.close(master)
        os.close(slave)
        connection.close()
        arm.mirror.close()


class InstructionError(ValueError):
    """An instruction packet a servo cannot execute (wrong parameters, unknown instruction)."""


class _EmulatedArm:
    """The servos and the MuJoCo arm behind them (inside the emulator process)."""

    def __init__(
        self, calibration: dict[str, dict[str, int]], seed: int, faults: BusFaults, mirror: SceneMirror
    ) -> None:
        self.faults = faults
        self.mirror = mirror
        self._model = load_model()
        self._data = mujoco.MjData(self._model)
        self._indices = So101Indices.from_model(self._model)
        self._zero_ticks = [ZERO_TICKS[name] for name in MOTOR_NAMES]
        self._servos = [Sts3215(MOTOR_IDS[name]) for name in MOTOR_NAMES]
        self._rng = random.Random(seed)
        self._counts: Counter[str] = Counter()
        self._reader = PacketReader()
        self._outbox: deque[tuple[float, bytes]] = deque()  # (due time, bytes) of replies on their way

        mujoco.mj_resetDataKeyframe(self._model, self._data, self._model.key(REST_KEYFRAME).id)
        mujoco.mj_forward(self._model, self._data)
        for index, (name, servo) in enumerate(zip(MOTOR_NAMES, self._servos, strict=True)):
            servo["Homing_Offset"] = calibration[name]["homing_offset"]
            servo["Min_Position_Limit"] = calibration[name]["range_min"]
            servo["Max_Position_Limit"] = calibration[name]["range_max"]
            self._sense(index)
            servo["Goal_Position"] = servo["Present_Position"]
            self._actuate(index)
        self.mirror.write(self._data.qpos, self._data.time)

    def run(self, master: int, connection: Connection) -> None:
        """Serve the bus and the controller and step the physics in real time, in one loop.

        A packet is executed as soon as it arrives; physics steps run in between, a few at a time. Returns
        when the controller says close or goes away.
        """
        timestep = self._model.opt.timestep
        start, steps = time.monotonic(), 0
        control = connection.fileno()
        while True:
            wake = start + steps * timestep + PHYSICS_PERIOD_S
            if self._outbox:
                wake = min(wake, self._outbox[0][0])
            readable, _, _ = select.select([master, control], [], [], max(0.0, wake - time.monotonic()))
            if control in readable and not self._answer_controller(connection):
                return
            if master in readable:
                with contextlib.suppress(BlockingIOError):
                    for packet in self._reader.feed(os.read(master, 4096), time.monotonic()):
                        self._counts["packets"] += 1
                        self._post(self._execute(packet))
            self._deliver(master)
            due = int((time.monotonic() - start) / timestep)
            if due - steps > MAX_LAG_STEPS:
                logger.debug("physics is %d steps behind the wall clock; dropping them", due - steps)
                steps = due - MAX_LAG_STEPS
            for _ in range(min(due - steps, STEPS_PER_TURN)):
                mujoco.mj_step(self._model, self._data)
                steps += 1
            self.mirror.write(self._data.qpos, self._data.time)

    def _answer_controller(self, connection: Connection) -> bool:
        """Answer one request from the controlling process; False when it is time to stop."""
        try:
            request = connection.recv()
        except EOFError:
            return False
        if request == ("close",):
            connection.send((True, None))
            return False
        connection.send(self._control(*request))
        return True

    def _control(self, command: str, *args: Any) -> tuple[bool, Any]:
        if command == "faults":
            self.faults = args[0]
            return True, time.monotonic()
        if command == "counts":
            rejected = {f"rejected_{reason}": n for reason, n in self._reader.rejected.items()}
            return True, {**self._counts, **rejected}
        if command == "set_qpos":
            self._set_qpos(args[0])
            return True, None
        if command == "joint_positions":
            qpos = self._data.qpos[self._indices.qpos]
            return True, {name: float(q) for name, q in zip(MOTOR_NAMES, qpos, strict=True)}
        if command == "register":
            servo_id, name = args
            for index, servo in enumerate(self._servos):
                if servo.id == servo_id:
                    self._sense(index)
                    return (True, servo[name]) if name in REGISTERS else (False, KeyError(name))
            return False, KeyError(f"no servo has id {servo_id}")
        return False, ValueError(f"unknown emulator command {command!r}")

    def _set_qpos(self, qpos: np.ndarray) -> None:
        """Teleport the scene to ``qpos`` at rest; servos with torque on take their new position as goal."""
        self._data.qpos[:] = qpos
        self._data.qvel[:] = 0.0
        mujoco.mj_forward(self._model, self._data)
        for index, servo in enumerate(self._servos):
            self._sense(index)
            if servo["Torque_Enable"] == 1:
                servo["Goal_Position"] = servo["Present_Position"]
            self._actuate(index)
        self.mirror.write(self._data.qpos, self._data.time)

    def _sense(self, index: int) -> None:
        """Update servo ``index``'s feedback registers from the simulation."""
        servo = self._servos[index]
        angle = self._data.qpos[self._indices.qpos[index]]
        raw = round(self._zero_ticks[index] + angle * TICKS_PER_RAD) % TICKS_PER_TURN
        velocity = round(self._data.qvel[self._indices.qvel[index]] * TICKS_PER_RAD)
        load = round(self._data.actuator_force[self._indices.actuator[index]] / STALL_TORQUE * 1000)
        load = max(-1000, min(1000, load))
        servo["Present_Position"] = (raw - servo["Homing_Offset"]) % TICKS_PER_TURN
        servo["Present_Velocity"] = max(-32767, min(32767, velocity))
        servo["Present_Load"] = load
        servo["Present_Current"] = round(abs(load) / 1000 * STALL_CURRENT)
        servo["Moving"] = int(abs(velocity) > MOVING_TICKS_PER_S)

    def _actuate(self, index: int) -> None:
        """Apply servo ``index``'s torque switch, gains and goal to its MuJoCo actuator."""
        servo, actuator = self._servos[index], self._indices.actuator[index]
        torque_on = servo["Torque_Enable"] == 1
        kp = KP_PER_P * servo["P_Coefficient"] if torque_on else 0.0
        kv = KV_PER_D * servo["D_Coefficient"] if torque_on else 0.0
        self._model.actuator_gainprm[actuator, 0] = kp
        self._model.actuator_biasprm[actuator, 1:3] = (-kp, -kv)
        low, high = servo["Min_Position_Limit"], servo["Max_Position_Limit"]
        if low >= high:
            low, high = 0, TICKS_PER_TURN - 1
        goal = min(max(servo["Goal_Position"], low), high)
        raw = (goal + servo["Homing_Offset"]) % TICKS_PER_TURN
        self._data.ctrl[actuator] = (raw - self._zero_ticks[index]) / TICKS_PER_RAD

    def _post(self, replies: list[Packet]) -> None:
        """Queue status packets for delivery after the injected latency, dropping or corrupting some."""
        faults, due = self.faults, time.monotonic() + self.faults.latency_s
        for reply in replies:
            if self._rng.random() < faults.drop_rate:
                self._counts["replies_dropped"] += 1
                continue
            encoded = bytearray(reply.encode())
            if self._rng.random() < faults.corrupt_rate:
                encoded[-1] ^= 0xFF
                self._counts["replies_corrupted"] += 1
            self._counts["replies"] += 1
            self._outbox.append((due, bytes(encoded)))

    def _deliver(self, master: int) -> None:
        now = time.monotonic()
        while self._outbox and self._outbox[0][0] <= now:
            wire = self._outbox.popleft()[1]
            try:
                written = os.write(master, wire)
            except BlockingIOError:
                written = 0
            if written < len(wire):
                logger.warning("feetech bus: the port's buffer is full (nobody reading?); reply truncated")

    def _execute(self, packet: Packet) -> list[Packet]:
        """Execute one instruction packet on the servos it addresses; return their status packets."""
        silent = self.faults.silent_ids
        awake = {servo.id: index for index, servo in enumerate(self._servos) if servo.id not in silent}
        try:
            return self._dispatch(packet, awake)
        except (InstructionError, RegisterError) as error:
            self._counts["invalid"] += 1
            logger.warning("feetech bus: ignored %s: %s", packet, error)
            return []

    def _dispatch(self, packet: Packet, awake: dict[int, int]) -> list[Packet]:
        instruction, params = packet.code, packet.params
        broadcast = packet.id == BROADCAST_ID
        if instruction in (Instruction.SYNC_READ, Instruction.SYNC_WRITE):
            if not broadcast or len(params) < 3:
                raise InstructionError("sync instructions go to the broadcast id with >= 3 parameters")
            address, length, rest = params[0], params[1], params[2:]
            if instruction == Instruction.SYNC_READ:
                return [self._read(awake[i], i, address, length) for i in rest if i in awake]
            if length < 1 or len(rest) % (length + 1):
                raise InstructionError(f"sync write data is not (id + {length} bytes) per servo")
            for start in range(0, len(rest), length + 1):
                if rest[start] in awake:
                    self._write(awake[rest[start]], address, rest[start + 1 : start + 1 + length])
            return []

        if not broadcast and packet.id not in awake:
            return []
        targets = sorted(awake.items()) if broadcast else [(packet.id, awake[packet.id])]
        if instruction == Instruction.PING:
            self._expect_params(params, 0)
            return [Packet(servo_id, 0) for servo_id, _ in targets]
        if instruction == Instruction.READ:
            self._expect_params(params, 2)
            return [] if broadcast else [self._read(targets[0][1], packet.id, params[0], params[1])]
        if instruction == Instruction.WRITE:
            self._expect_params(params, 2, at_least=True)
            for _, index in targets:
                self._write(index, params[0], params[1:])
        elif instruction == Instruction.REG_WRITE:
            self._expect_params(params, 2, at_least=True)
            for _, index in targets:
                self._servos[index].pending_write = (params[0], bytes(params[1:]))
        elif instruction == Instruction.ACTION:
            self._expect_params(params, 0)
            for _, index in targets:
                pending, self._servos[index].pending_write = self._servos[index].pending_write, None
                if pending is not None:
                    self._write(index, *pending)
        else:
            raise InstructionError(f"unknown instruction 0x{instruction:02x}")
        # Answers come from the id the packet addressed, even after a write to the ID register.
        answers = not broadcast and self._servos[targets[0][1]]["Response_Status_Level"] >= 1
        return [Packet(packet.id, 0)] if answers else []

    @staticmethod
    def _expect_params(params: bytes, count: int, *, at_least: bool = False) -> None:
        if len(params) < count or (not at_least and len(params) != count):
            expected = f"at least {count}" if at_least else f"exactly {count}"
            raise InstructionError(f"expected {expected} parameter bytes, got {len(params)}")

    def _read(self, index: int, servo_id: int, address: int, length: int) -> Packet:
        self._sense(index)
        return Packet(servo_id, 0, self._servos[index].read(address, length))

    def _write(self, index: int, address: int, data: bytes) -> None:
        servo = self._servos[index]
        was_on = servo["Torque_Enable"] == 1
        written = servo.write(address, data)
        if "Operating_Mode" in written and servo["Operating_Mode"] != 0:
            logger.warning("servo %d: only position mode (0) is emulated", servo.id)
        if not was_on and servo["Torque_Enable"] == 1 and "Goal_Position" not in written:
            self._sense(index)  # torque on: hold where the joint is now
            servo["Goal_Position"] = servo["Present_Position"]
        self._actuate(index)
