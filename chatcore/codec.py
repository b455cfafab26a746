"""Tiny binary codec: a bounds-checked reader and varints (unsigned LEB128), the one home of
both for the payload, the ratchet header and the group core. Parse errors -> MalformedMessage."""

from __future__ import annotations

from chatcore.errors import MalformedMessage


def varint(n: int) -> bytes:
    """Unsigned LEB128."""
    if n < 0:
        raise ValueError("varint must be non-negative")
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_varint(data: bytes, pos: int, limit: int = 10, minimal: bool = True) -> tuple[int, int]:
    """(value, new position). Rejects truncated varints, ones longer than ``limit`` bytes and
    (``minimal``) non-minimal encodings."""
    result = 0
    shift = 0
    for i in range(limit):
        if pos >= len(data):
            raise MalformedMessage("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            if minimal and b == 0 and i > 0:
                raise MalformedMessage("non-minimal varint")
            return result, pos
        shift += 7
    raise MalformedMessage("varint too long")


class Reader:
    """Sequential reader over bytes; every short read raises MalformedMessage."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError("expected bytes")
        self.data = bytes(data)
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise MalformedMessage("truncated")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def u64(self) -> int:
        return int.from_bytes(self.take(8), "big")

    def var(self) -> int:
        value, self.pos = read_varint(self.data, self.pos)
        return value

    def blob(self) -> bytes:
        return self.take(self.var())

    def end(self) -> None:
        if self.pos != len(self.data):
            raise MalformedMessage("trailing bytes")


def blob(data: bytes) -> bytes:
    return varint(len(data)) + data
