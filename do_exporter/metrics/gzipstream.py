"""One gzip member made of pieces compressed at different times.

Every HTTP client decodes one gzip member; not all decode several back to back (curl and
browsers stop after the first, RFC 1952 notwithstanding). So each piece of the exposition is
compressed on its own as raw deflate ending on a byte boundary (a sync flush, no final
block): pieces concatenate into one deflate stream, and a scrape sends the gzip header, the
pieces, an empty final block and the trailer. The trailer's CRC-32 of the whole text is
combined from the pieces' own (zlib's ``crc32_combine``, which Python's zlib does not offer),
so nothing is inflated or compressed again to serve it.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, no time, any OS
_END = b"\x03\x00"  # an empty final block (fixed Huffman), at a byte boundary
_POLY = 0xEDB88320  # CRC-32, reflected


@dataclass(frozen=True, slots=True)
class Segment:
    """Raw deflate data ending on a byte boundary, and the text it inflates to."""

    data: bytes
    crc: int
    length: int


def deflate(text: bytes, level: int) -> Segment:
    packer = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = packer.compress(text) + packer.flush(zlib.Z_SYNC_FLUSH)
    return Segment(data, zlib.crc32(text), len(text))


def stream(segments: Iterable[bytes], crc: int, length: int) -> tuple[bytes, ...]:
    """One gzip member: the header, ``segments`` as they are, the end and the trailer."""
    return (HEADER, *segments, _END + struct.pack("<II", crc, length & 0xFFFFFFFF))


def _multiply(a: int, b: int) -> int:
    """a times b modulo the CRC polynomial (zlib's ``multmodp``)."""
    m, product = 1 << 31, 0
    while True:
        if a & m:
            product ^= b
            if a & (m - 1) == 0:
                return product
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


_POWERS = [1 << 30]  # x^(2^k) modulo the polynomial, k = 0..31
for _ in range(31):
    _POWERS.append(_multiply(_POWERS[-1], _POWERS[-1]))


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """The CRC-32 of A + B from A's CRC, B's CRC and B's length."""
    power, n, k = 1 << 31, length2, 3  # x^(8 * length2): bytes are 8 bits
    while n:
        if n & 1:
            power = _multiply(_POWERS[k & 31], power)
        n >>= 1
        k += 1
    return _multiply(power, crc1) ^ crc2
