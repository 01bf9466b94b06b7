import pytest

from sim.emulators.protocol import BROADCAST_ID, MAX_PARAMS, Instruction, Packet, PacketError, PacketReader


def test_ping_packet_bytes_match_the_protocol():
    # PING id 1: FF FF | id 01 | length 02 | instruction 01 | checksum ~(1 + 2 + 1) & 0xFF = 0xFB
    assert Packet(1, Instruction.PING).encode() == bytes.fromhex("ff ff 01 02 01 fb")
    # READ id 3, address 56, 2 bytes: ~(3 + 4 + 2 + 56 + 2) & 0xFF = ~67 & 0xFF = 0xBC
    assert Packet(3, Instruction.READ, bytes([56, 2])).encode() == bytes.fromhex("ff ff 03 04 02 38 02 bc")


@pytest.mark.parametrize(
    "packet",
    [
        Packet(1, Instruction.PING),
        Packet(6, Instruction.WRITE, bytes([42, 0x00, 0x08])),
        Packet(BROADCAST_ID, Instruction.SYNC_READ, bytes([56, 2, 1, 2, 3, 4, 5, 6])),
        Packet(2, 0x20, bytes(range(10))),  # a status packet with the overload error bit
        Packet(0, Instruction.WRITE, bytes([0xFF] * MAX_PARAMS)),
    ],
)
def test_encode_decode_round_trip(packet):
    assert Packet.decode(packet.encode()) == packet
    assert PacketReader().feed(packet.encode(), now=0.0) == [packet]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (bytes.fromhex("ff ff 01 02 01 fa"), "checksum"),
        (bytes.fromhex("ff ff 01 03 01 fb"), "length"),
        (bytes.fromhex("ff 00 01 02 01 fb"), "header"),
        (bytes.fromhex("ff ff 01 02"), "header"),
        (bytes.fromhex("ff ff ff 02 01 fb"), "id"),
    ],
)
def test_decode_rejects_malformed_packets(data, reason):
    with pytest.raises(PacketError) as error:
        Packet.decode(data)
    assert error.value.reason == reason


def test_packet_rejects_out_of_range_fields():
    with pytest.raises(ValueError, match="id"):
        Packet(0xFF, Instruction.PING)
    with pytest.raises(ValueError, match="one byte"):
        Packet(1, 0x100)
    with pytest.raises(ValueError, match="at most"):
        Packet(1, Instruction.WRITE, bytes(MAX_PARAMS + 1))


def test_reader_reassembles_packets_split_across_reads():
    wire = Packet(1, Instruction.PING).encode() + Packet(2, Instruction.READ, bytes([56, 2])).encode()
    reader = PacketReader()
    packets = [p for i in range(len(wire)) for p in reader.feed(wire[i : i + 1], now=i * 1e-4)]
    assert [p.id for p in packets] == [1, 2]
    assert reader.pending == 0 and not reader.rejected


def test_reader_drops_bad_checksum_and_resynchronizes():
    corrupt = bytearray(Packet(1, Instruction.PING).encode())
    corrupt[-1] ^= 0xFF
    good = Packet(2, Instruction.PING).encode()
    reader = PacketReader()
    assert reader.feed(b"\x00\x13" + bytes(corrupt) + good, now=0.0) == [Packet(2, Instruction.PING)]
    # Noise twice: the leading bytes, then the bad packet's body after its header is dropped.
    assert reader.rejected == {"noise": 2, "checksum": 1}


def test_reader_drops_truncated_packet_after_silence():
    reader = PacketReader(inter_byte_timeout_s=0.01)
    assert reader.feed(Packet(1, Instruction.READ, bytes([56, 2])).encode()[:5], now=0.0) == []
    assert reader.pending == 5
    # The rest never comes; the next packet starts after a silence longer than the timeout.
    assert reader.feed(Packet(3, Instruction.PING).encode(), now=0.5) == [Packet(3, Instruction.PING)]
    assert reader.rejected == {"truncated": 1}


def test_reader_recovers_when_a_truncated_packet_runs_into_the_next_one():
    # No silence between them: the truncated packet swallows the next one's first bytes and fails its
    # checksum; the reader resynchronizes on the header that follows.
    truncated = Packet(1, Instruction.READ, bytes([56, 2])).encode()[:6]
    following = [Packet(2, Instruction.PING), Packet(3, Instruction.PING)]
    reader = PacketReader()
    packets = reader.feed(truncated + b"".join(p.encode() for p in following), now=0.0)
    assert packets[-1] == following[-1]
    assert reader.rejected["checksum"] >= 1


def test_reader_skips_a_longer_preamble_and_impossible_lengths():
    reader = PacketReader()
    ping = Packet(4, Instruction.PING)
    assert reader.feed(b"\xff" + ping.encode(), now=0.0) == [ping]
    assert reader.feed(b"\xff\xff\x01\x01" + ping.encode(), now=0.0) == [ping]
    assert reader.rejected == {"length": 1, "noise": 1}  # the bad header, then its id and length bytes


def test_reader_rejects_a_non_positive_timeout():
    with pytest.raises(ValueError, match="inter_byte_timeout_s"):
        PacketReader(inter_byte_timeout_s=0)
