import pytest

from sim.emulators.sts3215 import (
    MEMORY_SIZE,
    MODEL_NUMBER,
    REGISTERS,
    RegisterError,
    Sts3215,
    decode_sign_magnitude,
    encode_sign_magnitude,
)

# LeRobot's table lists two names we do not keep: an alias of address 80 and a register it marks read-only
# without documenting it.
LEROBOT_ONLY = {"Moving_Velocity", "Goal_Position_2"}


def test_control_table_matches_lerobot():
    from lerobot.motors.feetech.tables import (
        MODEL_NUMBER_TABLE,
        STS_SMS_SERIES_CONTROL_TABLE,
        STS_SMS_SERIES_ENCODINGS_TABLE,
    )

    lerobot = {name.strip(): spec for name, spec in STS_SMS_SERIES_CONTROL_TABLE.items()}
    assert set(lerobot) - LEROBOT_ONLY == set(REGISTERS)
    for name, register in REGISTERS.items():
        assert (register.address, register.size) == lerobot[name], name
    for name, sign_bit in STS_SMS_SERIES_ENCODINGS_TABLE.items():
        if name in REGISTERS:
            assert REGISTERS[name].sign_bit == sign_bit, name
    assert MODEL_NUMBER_TABLE["sts3215"] == MODEL_NUMBER


@pytest.mark.parametrize(("value", "sign_bit", "raw"), [(0, 11, 0), (518, 11, 518), (-518, 11, 0x800 | 518)])
def test_sign_magnitude(value, sign_bit, raw):
    # -518 with the sign in bit 11: 0x800 | 518 = 2566
    assert encode_sign_magnitude(value, sign_bit) == raw
    assert decode_sign_magnitude(raw, sign_bit) == value


def test_sign_magnitude_rejects_values_that_do_not_fit():
    with pytest.raises(ValueError, match="sign bit 11"):
        encode_sign_magnitude(2048, 11)


def test_named_and_byte_access_agree():
    servo = Sts3215(4)
    assert servo.id == 4 and servo["Model_Number"] == MODEL_NUMBER
    assert servo.read(3, 2) == MODEL_NUMBER.to_bytes(2, "little")
    servo["Homing_Offset"] = -100
    assert servo.read(31, 2) == (0x800 | 100).to_bytes(2, "little")


def test_writes_skip_read_only_and_reserved_bytes():
    servo = Sts3215(1)
    # Goal_Position (42, 43), Goal_Time (44, 45): writable
    assert servo.write(42, bytes([0x00, 0x08, 0x10, 0x00])) == {"Goal_Position", "Goal_Time"}
    assert servo["Goal_Position"] == 2048 and servo["Goal_Time"] == 16
    # Reserved 49..54, then Lock (55), then read-only Present_Position (56, 57)
    assert servo.write(54, bytes([1, 0, 7, 7])) == {"Lock"}
    assert servo["Lock"] == 0 and servo["Present_Position"] == 0
    assert servo.write(3, bytes([1, 2])) == set() and servo["Model_Number"] == MODEL_NUMBER
    servo.write(5, bytes([9]))
    assert servo.id == 9


@pytest.mark.parametrize(("address", "length"), [(0, 0), (MEMORY_SIZE - 1, 2), (200, 1)])
def test_access_outside_the_table_is_an_error(address, length):
    servo = Sts3215(1)
    with pytest.raises(RegisterError, match="control table"):
        servo.read(address, length)
    with pytest.raises(RegisterError, match="control table"):
        servo.write(address, bytes(length))


def test_servo_id_must_be_valid():
    with pytest.raises(ValueError, match=r"0\.\.253"):
        Sts3215(254)
