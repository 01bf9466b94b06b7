"""The Feetech STS3215 servo's control table (memory map) and one servo's register memory.

Addresses and sizes follow Feetech's STS/SMS memory table (register names are LeRobot's, so the two can
be checked against each other). EPROM registers (0..39) keep the arm's calibration and settings; SRAM
registers (40..) hold the torque switch, goal and feedback; 80..86 are factory settings. Signed values
are sign-magnitude: the sign is one bit (bit 11 of Homing_Offset, bit 15 of positions and velocities,
bit 10 of the load) and the other bits are the magnitude.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)

MODEL_NUMBER = 777  # the STS3215's model number (register Model_Number)
TICKS_PER_TURN = 4096  # 12-bit magnetic encoder


@dataclass(frozen=True)
class Register:
    """One register of the control table.

    Attributes:
        address: first byte's address.
        size: 1 or 2 bytes (little-endian).
        writable: False for read-only registers (their bytes ignore writes).
        sign_bit: the sign bit of a sign-magnitude value, or None for an unsigned value.

    """

    address: int
    size: int
    writable: bool = True
    sign_bit: int | None = None


REGISTERS: dict[str, Register] = {
    # EPROM, read-only
    "Firmware_Major_Version": Register(0, 1, writable=False),
    "Firmware_Minor_Version": Register(1, 1, writable=False),
    "Model_Number": Register(3, 2, writable=False),
    # EPROM, read-write
    "ID": Register(5, 1),
    "Baud_Rate": Register(6, 1),
    "Return_Delay_Time": Register(7, 1),
    "Response_Status_Level": Register(8, 1),
    "Min_Position_Limit": Register(9, 2),
    "Max_Position_Limit": Register(11, 2),
    "Max_Temperature_Limit": Register(13, 1),
    "Max_Voltage_Limit": Register(14, 1),
    "Min_Voltage_Limit": Register(15, 1),
    "Max_Torque_Limit": Register(16, 2),
    "Phase": Register(18, 1),
    "Unloading_Condition": Register(19, 1),
    "LED_Alarm_Condition": Register(20, 1),
    "P_Coefficient": Register(21, 1),
    "D_Coefficient": Register(22, 1),
    "I_Coefficient": Register(23, 1),
    "Minimum_Startup_Force": Register(24, 2),
    "CW_Dead_Zone": Register(26, 1),
    "CCW_Dead_Zone": Register(27, 1),
    "Protection_Current": Register(28, 2),
    "Angular_Resolution": Register(30, 1),
    "Homing_Offset": Register(31, 2, sign_bit=11),
    "Operating_Mode": Register(33, 1),
    "Protective_Torque": Register(34, 1),
    "Protection_Time": Register(35, 1),
    "Overload_Torque": Register(36, 1),
    "Velocity_closed_loop_P_proportional_coefficient": Register(37, 1),
    "Over_Current_Protection_Time": Register(38, 1),
    "Velocity_closed_loop_I_integral_coefficient": Register(39, 1),
    # SRAM, read-write
    "Torque_Enable": Register(40, 1),
    "Acceleration": Register(41, 1),
    "Goal_Position": Register(42, 2, sign_bit=15),
    "Goal_Time": Register(44, 2),
    "Goal_Velocity": Register(46, 2, sign_bit=15),
    "Torque_Limit": Register(48, 2),
    "Lock": Register(55, 1),
    # SRAM, read-only
    "Present_Position": Register(56, 2, writable=False, sign_bit=15),
    "Present_Velocity": Register(58, 2, writable=False, sign_bit=15),
    "Present_Load": Register(60, 2, writable=False, sign_bit=10),
    "Present_Voltage": Register(62, 1, writable=False),
    "Present_Temperature": Register(63, 1, writable=False),
    "Status": Register(65, 1, writable=False),
    "Moving": Register(66, 1, writable=False),
    "Present_Current": Register(69, 2, writable=False),
    # Factory
    "Moving_Velocity_Threshold": Register(80, 1),
    "DTs": Register(81, 1),
    "Velocity_Unit_factor": Register(82, 1),
    "Hts": Register(83, 1),
    "Maximum_Velocity_Limit": Register(84, 1),
    "Maximum_Acceleration": Register(85, 1),
    "Acceleration_Multiplier": Register(86, 1),
}
MEMORY_SIZE = max(r.address + r.size for r in REGISTERS.values())

# Power-up values of a servo that left the factory (registers not listed are 0). Calibration
# (Homing_Offset, position limits) and the id are set per servo on top of these.
POWER_UP: dict[str, int] = {
    "Firmware_Major_Version": 3,
    "Firmware_Minor_Version": 10,
    "Model_Number": MODEL_NUMBER,
    "ID": 1,
    "Return_Delay_Time": 250,
    "Response_Status_Level": 1,
    "Max_Position_Limit": TICKS_PER_TURN - 1,
    "Max_Temperature_Limit": 70,
    "Max_Voltage_Limit": 140,
    "Min_Voltage_Limit": 40,
    "Max_Torque_Limit": 1000,
    "Phase": 0x0C,
    "P_Coefficient": 32,
    "D_Coefficient": 32,
    "Minimum_Startup_Force": 16,
    "CW_Dead_Zone": 1,
    "CCW_Dead_Zone": 1,
    "Protection_Current": 500,
    "Angular_Resolution": 1,
    "Protective_Torque": 20,
    "Protection_Time": 200,
    "Overload_Torque": 80,
    "Torque_Limit": 1000,
    "Lock": 1,
    "Present_Voltage": 120,
    "Present_Temperature": 30,
}

_OWNER: list[str | None] = [None] * MEMORY_SIZE  # register name of each byte, None for reserved bytes
for _name, _register in REGISTERS.items():
    for _address in range(_register.address, _register.address + _register.size):
        _OWNER[_address] = _name


class RegisterError(ValueError):
    """A read or write outside the control table."""


def encode_sign_magnitude(value: int, sign_bit: int) -> int:
    """``value`` as sign-magnitude with the sign in bit ``sign_bit``."""
    if abs(value) >= 1 << sign_bit:
        raise ValueError(f"|{value}| does not fit below sign bit {sign_bit}")
    return (1 << sign_bit) | -value if value < 0 else value


def decode_sign_magnitude(raw: int, sign_bit: int) -> int:
    """The signed value of a sign-magnitude word with the sign in bit ``sign_bit``."""
    magnitude = raw & ((1 << sign_bit) - 1)
    return -magnitude if raw >> sign_bit & 1 else magnitude


class Sts3215:
    """One servo's register memory: byte-level `read` / `write` as the bus sees them, and named access.

    ``servo["Goal_Position"]`` reads a register's value (signed for sign-magnitude registers);
    ``servo["Present_Position"] = 2048`` sets one, read-only ones included (the servo's own firmware
    updates those).

    Attributes:
        memory: the control table's bytes.
        pending_write: a REG_WRITE's (address, data), applied by the next ACTION.

    """

    def __init__(self, servo_id: int) -> None:
        if not 0 <= servo_id <= 253:
            raise ValueError(f"servo id must be in 0..253, got {servo_id}")
        self.memory = bytearray(MEMORY_SIZE)
        self.pending_write: tuple[int, bytes] | None = None
        for name, value in POWER_UP.items():
            self[name] = value
        self["ID"] = servo_id

    @property
    def id(self) -> int:
        """The servo's id (register ID; a write to it takes effect at once)."""
        return self.memory[REGISTERS["ID"].address]

    def __getitem__(self, name: str) -> int:
        register = REGISTERS[name]
        raw = int.from_bytes(self.memory[register.address : register.address + register.size], "little")
        return raw if register.sign_bit is None else decode_sign_magnitude(raw, register.sign_bit)

    def __setitem__(self, name: str, value: int) -> None:
        register = REGISTERS[name]
        raw = value if register.sign_bit is None else encode_sign_magnitude(value, register.sign_bit)
        self.memory[register.address : register.address + register.size] = raw.to_bytes(
            register.size, "little"
        )

    def read(self, address: int, length: int) -> bytes:
        """The bytes a READ of ``length`` bytes at ``address`` returns.

        Raises:
            RegisterError: the range is empty or leaves the control table.

        """
        self._check_range(address, length)
        return bytes(self.memory[address : address + length])

    def write(self, address: int, data: bytes) -> set[str]:
        """Write ``data`` at ``address`` as a WRITE does; return the names of the registers written.

        Bytes of read-only registers and reserved bytes are left unchanged (and logged).

        Raises:
            RegisterError: the range is empty or leaves the control table.

        """
        self._check_range(address, len(data))
        written: set[str] = set()
        ignored = []
        for at, byte in enumerate(data, start=address):
            owner = _OWNER[at]
            if owner is None or not REGISTERS[owner].writable:
                ignored.append(at)
                continue
            self.memory[at] = byte
            written.add(owner)
        if ignored:
            logger.warning("servo %d: write to read-only or reserved addresses %s ignored", self.id, ignored)
        return written

    def _check_range(self, address: int, length: int) -> None:
        if length < 1 or address + length > MEMORY_SIZE:
            raise RegisterError(
                f"servo {self.id}: {length} bytes at address {address} leave the control table "
                f"(addresses 0..{MEMORY_SIZE - 1})"
            )
