"""Reading one answer's body: capped, inflated a bounded piece at a time, every byte
acquired from the process's :class:`~.budget.ByteBudget` before it is read or inflated.

Neither an endless body nor a gzip bomb holds more than the cap plus one piece: the body is
read :data:`READ_CHUNK_BYTES` at a time (few reads: one raw read costs ~40% less CPU than
``Response.content``'s 10 kB chunks, docs/benchmarks.md) and inflated here (gzip, deflate)
:data:`PIECE_BYTES` at a time.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable
from typing import Any

from .budget import Lease, return_big_buffers_to_the_os

READ_CHUNK_BYTES = 1024 * 1024
PIECE_BYTES = 1024 * 1024  # inflated bytes produced (and acquired) at a time
DECODE_COUNTED_ABOVE = 64 * 1024  # smaller bodies' decoding is not worth counting
# No real answer is this large (a 10,000-object page is about 1 MB): past it, big buffers
# are made to go back to the OS when freed (see budget.return_big_buffers_to_the_os).
UNUSUAL_BYTES = 2 * 1024 * 1024


class BodyTooLarge(ValueError):
    """The body is over the cap, raw or inflated."""


class Undecodable(ValueError):
    """The body's Content-Encoding is not one we asked for, or its data is corrupt."""


class Inflater:
    """gzip or deflate, inflated a bounded amount at a time (a bomb never fully inflates)."""

    def __init__(self, *, gzip: bool) -> None:
        self._gzip = gzip
        self._obj: Any = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzip else None
        self._head = b""  # deflate: the first bytes, until zlib or raw format is known
        self._data = b""  # input not yet inflated
        self._done = False

    def feed(self, data: bytes) -> None:
        """Queue ``data`` (everything fed before must have been pulled out)."""
        if self._obj is None:
            self._head += data
            if len(self._head) < 2:
                return
            # "deflate" is meant to be zlib-wrapped (RFC 9110), but some servers send raw.
            head = self._head
            wrapped = head[0] & 0x0F == 8 and int.from_bytes(head[:2], "big") % 31 == 0
            self._obj = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
            data, self._head = head, b""
        self._data = data

    def pull(self, limit: int) -> bytes:
        """Up to ``limit`` inflated bytes of what was fed; b"" once it is all out."""
        while self._data and not self._done:
            try:
                piece: bytes = self._obj.decompress(self._data, limit)
            except zlib.error:
                raise Undecodable("undecodable compressed body") from None
            if self._obj.eof:
                self._data = self._obj.unused_data
                if self._data and self._gzip:
                    self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)  # next gzip member
                else:
                    self._done = True  # the end (bytes after a deflate stream are ignored)
            else:
                self._data = self._obj.unconsumed_tail
            if piece:
                return piece
        return b""


def inflater_for(content_encoding: str | None) -> Inflater | None:
    """The decoder for a Content-Encoding; :class:`Undecodable` for one we did not ask for."""
    codings = [
        c
        for c in (part.strip().lower() for part in (content_encoding or "").split(","))
        if c and c != "identity"
    ]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in ("gzip", "x-gzip", "deflate"):
        return Inflater(gzip=codings[0] != "deflate")
    raise Undecodable(f"unsupported Content-Encoding {(content_encoding or '')[:40]!r}")


class _Buffer:
    """The body so far: one bytes object, or a bytearray once there are two pieces (no
    join copy at the end, so a body never takes twice its size)."""

    def __init__(self) -> None:
        self.first: bytes | None = None
        self.more: bytearray | None = None
        self.size = 0

    def add(self, piece: bytes) -> None:
        self.size += len(piece)
        if self.size > UNUSUAL_BYTES:
            return_big_buffers_to_the_os()
        if self.first is None:
            self.first = piece
            return
        if self.more is None:
            self.more = bytearray(self.first)
            self.first = b""
        self.more += piece

    def value(self) -> bytes:
        if self.more is not None:
            return self.more  # type: ignore[return-value]  # bytes-like: every parser takes it
        return self.first or b""


def read_body(
    raw: Any,
    content_encoding: str | None,
    *,
    cap: int,
    lease: Lease,
    deadline: float,
    cut: threading.Event,
    decode_cost: Callable[[bytes], int],
) -> bytes:
    """The body of ``raw`` (a urllib3 response), at most ``cap`` bytes raw and inflated,
    every byte held in ``lease`` (acquired before it is read; still held on return, with
    what decoding it may cost, ``decode_cost(body)``: the caller releases the lease once it
    has parsed)."""
    inflater = inflater_for(content_encoding)
    body = _Buffer()
    raw_size = 0
    while not cut.is_set():
        lease.grow(READ_CHUNK_BYTES, deadline)
        chunk: bytes = raw.read(READ_CHUNK_BYTES, decode_content=False)
        lease.shrink(READ_CHUNK_BYTES - len(chunk))
        if not chunk:
            break
        raw_size += len(chunk)
        if raw_size > cap:
            raise BodyTooLarge(f"body over {cap} bytes")
        if inflater is None:
            body.add(chunk)
            continue
        inflater.feed(chunk)
        while True:
            lease.grow(PIECE_BYTES, deadline)
            piece = inflater.pull(min(PIECE_BYTES, cap - body.size + 1))
            lease.shrink(PIECE_BYTES - len(piece))
            if not piece:
                break
            body.add(piece)
            if body.size > cap:
                raise BodyTooLarge(f"body over {cap} bytes once decompressed")
        lease.shrink(len(chunk))  # inflated: the raw chunk is gone
    data = body.value()
    if len(data) > DECODE_COUNTED_ABOVE:
        lease.grow(decode_cost(data), deadline)
    return data
