"""Feetech SCS/STS serial-bus packets (protocol 0, the one the STS3215 speaks).

Instruction packet (host -> servo): ``0xFF 0xFF id length instruction params... checksum``.
Status packet (servo -> host):      ``0xFF 0xFF id length error params... checksum``.
``length = len(params) + 2`` and ``checksum = ~(id + length + instruction_or_error + sum(params)) & 0xFF``.
Multi-byte values are little-endian. Id 0xFE is the broadcast id: servos execute broadcast packets but
do not answer them, except PING and SYNC_READ, which each addressed servo answers in turn.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from enum import IntEnum

logger = logging.getLogger(__name__)

HEADER = b"\xff\xff"
BROADCAST_ID = 0xFE
MAX_PACKET_SIZE = 250  # the Feetech SDK's TXPACKET_MAX_LEN / RXPACKET_MAX_LEN, header to checksum
MAX_PARAMS = MAX_PACKET_SIZE - 6


class Instruction(IntEnum):
    """Instruction codes of protocol 0."""

    PING = 0x01
    READ = 0x02
    WRITE = 0x03
    REG_WRITE = 0x04
    ACTION = 0x05
    SYNC_READ = 0x82
    SYNC_WRITE = 0x83


class PacketError(ValueError):
    """A byte string that is not a valid packet; ``reason`` is one of header, id, length, checksum."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def checksum(body: bytes) -> int:
    """The checksum of a packet body (id, length, instruction or error, params)."""
    return ~sum(body) & 0xFF


@dataclass(frozen=True)
class Packet:
    """One packet: an instruction (``code`` is the instruction) or a status (``code`` is the error byte).

    Attributes:
        id: servo id, 0..253, or `BROADCAST_ID`.
        code: the instruction (host -> servo) or the error bits (servo -> host), 0..255.
        params: the parameter bytes, at most `MAX_PARAMS`.

    """

    id: int
    code: int
    params: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.id <= BROADCAST_ID:
            raise ValueError(f"packet id must be in 0..{BROADCAST_ID}, got {self.id}")
        if not 0 <= self.code <= 0xFF:
            raise ValueError(f"packet code must be one byte, got {self.code}")
        if len(self.params) > MAX_PARAMS:
            raise ValueError(f"a packet carries at most {MAX_PARAMS} parameter bytes, got {len(self.params)}")

    def encode(self) -> bytes:
        """The packet's bytes on the wire, header to checksum."""
        body = bytes((self.id, len(self.params) + 2, self.code)) + self.params
        return HEADER + body + bytes((checksum(body),))

    @classmethod
    def decode(cls, data: bytes) -> Packet:
        """Parse exactly one packet, header to checksum.

        Raises:
            PacketError: the bytes are not one well-formed packet with a correct checksum.

        """
        if len(data) < 6 or data[:2] != HEADER:
            raise PacketError("header", f"a packet starts with FF FF and has >= 6 bytes, got {data.hex(' ')}")
        if data[2] > BROADCAST_ID:
            raise PacketError("id", f"invalid packet id 0x{data[2]:02x}")
        if data[3] < 2 or data[3] + 4 != len(data):
            raise PacketError("length", f"length byte {data[3]} does not match a {len(data)}-byte packet")
        if checksum(data[2:-1]) != data[-1]:
            raise PacketError("checksum", f"checksum 0x{data[-1]:02x} != 0x{checksum(data[2:-1]):02x}")
        return cls(id=data[2], code=data[4], params=bytes(data[5:-1]))


class PacketReader:
    """Splits a byte stream into packets, as a servo's receiver does.

    Bytes before a header are noise; a packet with an impossible length or a wrong checksum is dropped
    and the reader resynchronizes on the next header; an incomplete packet followed by a silence longer
    than ``inter_byte_timeout_s`` is dropped as truncated. Each rejection is logged and counted in
    ``rejected`` by reason (noise, length, checksum, truncated).
    """

    def __init__(self, inter_byte_timeout_s: float = 0.01) -> None:
        if inter_byte_timeout_s <= 0:
            raise ValueError(f"inter_byte_timeout_s must be > 0, got {inter_byte_timeout_s}")
        self.inter_byte_timeout_s = inter_byte_timeout_s
        self.rejected: Counter[str] = Counter()
        self._buffer = bytearray()
        self._last_byte_time = 0.0

    @property
    def pending(self) -> int:
        """Bytes held back, waiting for the rest of a packet."""
        return len(self._buffer)

    def feed(self, data: bytes, now: float) -> list[Packet]:
        """Add bytes received at time ``now`` (seconds); return the packets they complete, in order."""
        if self._buffer and now - self._last_byte_time > self.inter_byte_timeout_s:
            self._reject("truncated", f"dropped incomplete packet {self._buffer.hex(' ')}")
            self._buffer.clear()
        self._buffer += data
        self._last_byte_time = now
        packets = []
        while (step := self._next()) is not False:
            if isinstance(step, Packet):
                packets.append(step)
        return packets

    def _next(self) -> Packet | bool:
        """Consume one packet or one bad chunk (-> the packet or True); False when more bytes are needed."""
        buffer = self._buffer
        start = buffer.find(HEADER)
        if start != 0:
            keep = 1 if start < 0 and buffer.endswith(b"\xff") else 0  # a lone FF may start a header
            end = start if start > 0 else len(buffer) - keep
            if end > 0:
                self._reject("noise", f"skipped {end} bytes before a header: {buffer[:end].hex(' ')}")
                del buffer[:end]
            return start > 0
        if len(buffer) < 4:
            return False
        if buffer[2] == 0xFF:  # a longer preamble: FF FF FF ...
            del buffer[0]
            return True
        size = buffer[3] + 4
        if buffer[3] < 2 or size > MAX_PACKET_SIZE:
            self._reject("length", f"impossible length byte {buffer[3]}")
            del buffer[:2]
            return True
        if len(buffer) < size:
            return False
        frame = bytes(buffer[:size])
        try:
            packet = Packet.decode(frame)
        except PacketError as error:
            self._reject(error.reason, f"{error}: {frame.hex(' ')}")
            del buffer[:2]
            return True
        del buffer[:size]
        return packet

    def _reject(self, reason: str, message: str) -> None:
        self.rejected[reason] += 1
        logger.warning("feetech bus: %s", message)
