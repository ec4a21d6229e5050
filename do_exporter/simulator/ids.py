"""Deterministic identifiers: nothing about an object is ever stored.

An object is its index in its namespace. Its 64-hex id comes from a SHAKE-256 stream keyed by
the scenario seed, the account and the namespace, read in blocks of ``BLOCK`` ids, so a page
of 10,000 ids costs a handful of hash calls. Whether it has stored data follows a fixed
pattern of period ``q`` for a ratio ``p/q``: exactly ``n * p // q`` of the first ``n`` objects
have it, which is what :func:`stored_count` returns.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from fractions import Fraction

BLOCK = 1024
ID_HEX = 64
_CURSOR_VERSION = 1
_CURSOR_LEN = 1 + 8 + 8 + 4


def derive_hex(seed: int, *parts: str, length: int = 32) -> str:
    """A stable lowercase hex string of ``length`` characters for ``seed`` and ``parts``."""
    material = "\x1f".join([str(seed), *parts]).encode()
    return hashlib.shake_256(material).hexdigest(length // 2 + 1)[:length]


def namespace_key(seed: int, account_id: str, namespace_id: str) -> bytes:
    """The bytes that key a namespace's id stream and bind its cursors."""
    return hashlib.sha256(f"{seed}\x1f{account_id}\x1f{namespace_id}".encode()).digest()


def object_ids_raw(key: bytes, start: int, count: int) -> bytes:
    """The 32-byte ids of objects ``start .. start+count-1``, concatenated."""
    if count <= 0:
        return b""
    first_block, offset = divmod(start, BLOCK)
    last_block = (start + count - 1) // BLOCK
    chunks = [
        hashlib.shake_256(key + block.to_bytes(8, "big")).digest(32 * BLOCK)
        for block in range(first_block, last_block + 1)
    ]
    raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    return raw[32 * offset : 32 * (offset + count)]


def object_ids_hex(key: bytes, start: int, count: int) -> str:
    """The ids of objects ``start .. start+count-1`` concatenated (``64 * count`` hex chars)."""
    return object_ids_raw(key, start, count).hex()


def object_id(key: bytes, index: int) -> str:
    """The 64-hex id of object ``index``."""
    return object_ids_hex(key, index, 1)


def ratio_fraction(ratio: float) -> Fraction:
    """``ratio`` as a fraction with a denominator of at most 1000 (the pattern's period)."""
    return Fraction(ratio).limit_denominator(1000)


def stored_count(ratio: Fraction, objects: int) -> int:
    """How many of the first ``objects`` objects have stored data."""
    return objects * ratio.numerator // ratio.denominator


def has_stored_data(ratio: Fraction, index: int) -> bool:
    """Whether object ``index`` has stored data."""
    p, q = ratio.numerator, ratio.denominator
    return (index + 1) * p // q - index * p // q == 1


def stored_flags(ratio: Fraction, start: int, count: int) -> list[bool]:
    """``has_stored_data`` for ``start .. start+count-1``, built by tiling one period."""
    q = ratio.denominator
    period = [has_stored_data(ratio, i) for i in range(q)]
    offset = start % q
    reps = (offset + count) // q + 1
    return (period * reps)[offset : offset + count]


def encode_cursor(key: bytes, secret: bytes, index: int) -> str:
    """An opaque cursor pointing at object ``index`` of the namespace ``key``."""
    body = bytes([_CURSOR_VERSION]) + key[:8] + index.to_bytes(8, "big")
    mac = hashlib.sha256(secret + body).digest()[:4]
    return base64.urlsafe_b64encode(body + mac).decode().rstrip("=")


def decode_cursor(key: bytes, secret: bytes, cursor: str) -> int | None:
    """The index a cursor points at, or None if it is malformed or from another namespace."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) != _CURSOR_LEN or raw[0] != _CURSOR_VERSION or raw[1:9] != key[:8]:
        return None
    body, mac = raw[:-4], raw[-4:]
    if hashlib.sha256(secret + body).digest()[:4] != mac:
        return None
    return int.from_bytes(body[9:17], "big")
