"""Deterministic identifiers: nothing about an object is ever stored.

An object is its index in its namespace, and its 64-hex id follows from the scenario seed,
the account, the namespace and that index alone, in blocks of ``BLOCK`` ids. Each namespace
has a pad of ``BLOCK`` records of 65 random bytes (SHAKE-256 of its key, in a small LRU
cache). Block ``b`` takes the pad's records from a keyed rotation and turns each of a record's
first 64 bytes ``x`` into the hex digit ``(x mod 16) xor t[x div 16]``, where ``t`` is 16
keyed nibbles; rotation and ``t`` come from ``SHAKE-256(key ‖ b)``. That is one 256-entry
``bytes.translate`` table per block (every digit has 16 of its entries, so digits stay
uniform), and a page of 10,000 ids is one or two ``translate`` calls per block, already hex,
with the 65th byte of each record left free for the page builder to mark.

Whether it has stored data follows a fixed pattern of period ``q`` for a ratio ``p/q``:
exactly ``n * p // q`` of the first ``n`` objects have it, which is what
:func:`stored_count` returns.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
from collections.abc import Iterator
from fractions import Fraction

BLOCK = 1024
ID_HEX = 64
RECORD = ID_HEX + 1  # an id as hex text, then one free byte
_CURSOR_VERSION = 1
_CURSOR_LEN = 1 + 8 + 8 + 4
_HEX = b"0123456789abcdef"
# _ROWS[t] is the 16 hex digits each xor-ed with t: row x div 16 of a block's table.
_ROWS = tuple(bytes(_HEX[low ^ t] for low in range(16)) for t in range(16))


def derive_hex(seed: int, *parts: str, length: int = 32) -> str:
    """A stable lowercase hex string of ``length`` characters for ``seed`` and ``parts``."""
    material = "\x1f".join([str(seed), *parts]).encode()
    return hashlib.shake_256(material).hexdigest(length // 2 + 1)[:length]


def namespace_key(seed: int, account_id: str, namespace_id: str) -> bytes:
    """The bytes that key a namespace's id stream and bind its cursors."""
    return hashlib.sha256(f"{seed}\x1f{account_id}\x1f{namespace_id}".encode()).digest()


@functools.lru_cache(maxsize=64)
def _pad(key: bytes) -> bytearray:
    """The namespace's pad, ``BLOCK`` records of ``RECORD`` random bytes (66.5 kB).

    A bytearray so that its slices translate to bytearrays the page builder can mark in
    place; the pad itself is shared and never written to.
    """
    return bytearray(hashlib.shake_256(key + b"\x1fpad").digest(RECORD * BLOCK))


def id_text(key: bytes, start: int, count: int) -> Iterator[bytearray]:
    """The ids of objects ``start .. start+count-1`` as hex, ``RECORD`` bytes per id.

    Each id is 64 hex digits followed by one byte of no meaning, for the caller to overwrite.
    Yields consecutive pieces (one or two per block touched), each a new bytearray.
    """
    if count <= 0:
        return
    pad = _pad(key)
    first_block, last_block = start // BLOCK, (start + count - 1) // BLOCK
    for block in range(first_block, last_block + 1):
        keyed = hashlib.shake_256(key + block.to_bytes(8, "big")).digest(4 + 16)
        rotation = int.from_bytes(keyed[:4], "big") % BLOCK
        table = b"".join([_ROWS[t & 15] for t in keyed[4:]])
        low = rotation + max(start - block * BLOCK, 0)
        high = rotation + min(start + count - block * BLOCK, BLOCK)
        if low < BLOCK:
            yield pad[low * RECORD : min(high, BLOCK) * RECORD].translate(table)
        if high > BLOCK:
            yield pad[max(low - BLOCK, 0) * RECORD : (high - BLOCK) * RECORD].translate(table)


def object_ids_hex(key: bytes, start: int, count: int) -> str:
    """The ids of objects ``start .. start+count-1`` concatenated (``64 * count`` hex chars)."""
    text = bytearray().join(id_text(key, start, count))
    del text[ID_HEX::RECORD]
    return text.decode()


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
