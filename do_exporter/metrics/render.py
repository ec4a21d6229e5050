"""The text exposition (format 0.0.4), written once per change and held gzip-compressed.

The shared family-building code of every builder:

- :func:`lines` writes one family's sample lines from rows ``(label values, value)`` given
  in the contract's label order (labels come out sorted by name, values escaped, numbers as
  Go prints them: byte for byte what ``prometheus_client.generate_latest`` writes);
- :class:`Escaper` escapes each label value once and reuses it while it is in use;
- :class:`Renderer` turns :class:`Part` s (one family's lines for one scope, usually an
  account, with a key saying what they were made from) into an :class:`Exposition`: a part
  whose key equals the last render's is not written again, its deflate segment is reused.

An :class:`Exposition` holds one form only: per family, its ``# HELP``/``# TYPE`` header and
its parts, each compressed on its own as a raw deflate segment (:mod:`.gzipstream`); sent
back to back between a gzip header and trailer they are one gzip member, which every client
decodes. The plain text is inflated while it is sent (:meth:`Exposition.plain`). A
family's samples stay together, in contract order.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from . import gzipstream
from .contract import ALL_GROUPS, Family, enabled_family

Row = tuple[Sequence[str], float]
GZIP_LEVEL = 6
_PIECE = 1 << 18  # bytes of plain text inflated at a time


def escape(value: str) -> str:
    """A label value as the exposition writes it: backslash, newline and quote escaped; a
    lone surrogate (not encodable as UTF-8) replaced by U+FFFD, never an exception."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in value)
    if "\\" in value or "\n" in value or '"' in value:
        value = value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def number(value: float) -> str:
    """A sample value as Go (and ``generate_latest``) prints it: ``1.0``, ``1.7958672e+09``."""
    d = float(value)
    if math.isinf(d):
        return "+Inf" if d > 0 else "-Inf"
    if d != d:
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    if d > 0 and dot > 6:
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


class Escaper:
    """Escaped label values, each computed once and kept while a render uses it.

    :meth:`next_generation` after a render drops the values that render did not use, so the
    cache holds what the exposition holds, never more.
    """

    def __init__(self) -> None:
        self._old: dict[str, str] = {}
        self._new: dict[str, str] = {}

    def __call__(self, value: str) -> str:
        found = self._new.get(value)
        if found is None:
            found = self._old.get(value)
            if found is None:
                found = escape(value if isinstance(value, str) else str(value))
            self._new[value] = found
        return found

    def next_generation(self) -> None:
        self._old, self._new = self._new, {}


def _template(name: str, labels: Sequence[str]) -> tuple[str, list[int]]:
    order = sorted(range(len(labels)), key=lambda i: labels[i])
    pairs = ",".join(f'{labels[i]}="%s"' for i in order)
    return f"{name}{{{pairs}}} %s\n", order


def lines(
    name: str, labels: Sequence[str], rows: Iterable[Row], esc: Callable[[str], str] = escape
) -> str:
    """Sample lines of ``name``: each row's values are in ``labels`` order (pure)."""
    if not labels:
        return "".join(f"{name} {number(v)}\n" for _, v in rows)
    template, order = _template(name, labels)
    if order == list(range(len(labels))):
        return "".join(template % (*map(esc, values), number(v)) for values, v in rows)
    return "".join(template % (*[esc(values[i]) for i in order], number(v)) for values, v in rows)


def summary_lines(
    name: str,
    labels: Sequence[str],
    rows: Iterable[tuple[Sequence[str], Sequence[tuple[str, float]], tuple[float, float] | None]],
    esc: Callable[[str], str] = escape,
) -> str:
    """Sample lines of the summary ``name`` (``labels`` end in ``quantile``): each row's label
    values without the quantile, its quantiles ``(label, value)``, and ``(sum, count)`` or
    None, written as ``generate_latest`` does (quantiles, then ``_sum``, ``_count``)."""
    quantile, _ = _template(name, labels)
    total = _template(name + "_sum", labels[:-1])[0], _template(name + "_count", labels[:-1])[0]
    if sorted(labels) != list(labels):
        raise ValueError(f"summary labels out of order: {labels}")
    out = []
    for values, quantiles, sums in rows:
        escaped = tuple(map(esc, values))
        out += [quantile % (*escaped, esc(q), number(v)) for q, v in quantiles]
        if sums is not None:
            out.append(total[0] % (*escaped, number(sums[0])))
            out.append(total[1] % (*escaped, number(sums[1])))
    return "".join(out)


def family_lines(family: Family, rows: Iterable[Row], esc: Callable[[str], str] = escape) -> str:
    return lines(family.name, family.labels, rows, esc)


def text(families: Iterable[tuple[Family, str]], enabled: frozenset[str] = ALL_GROUPS) -> str:
    """Families with their sample lines as one text (small expositions: own metrics)."""
    return "".join(f.header + body for f, body in families if enabled_family(f, enabled))


@dataclass(frozen=True, slots=True)
class Part:
    """One family's samples for one scope (an account id, or ``""``).

    ``key``: what they were made from; equal to the last render's key, the last render's
    bytes are reused and ``write`` is not called. ``write`` returns the sample lines.
    """

    family: Family
    scope: str
    key: object
    write: Callable[[], str]


def _deflate(data: str, level: int) -> gzipstream.Segment:
    return gzipstream.deflate(data.encode("utf-8"), level)


@dataclass(frozen=True, slots=True)
class _Member:
    scope: str
    key: object
    start: int
    end: int
    plain: int  # bytes once inflated
    crc: int  # CRC-32 of those bytes


@dataclass(frozen=True, slots=True)
class _Block:
    """One family: its header and parts as deflate segments in one byte string."""

    family: Family
    data: bytes
    members: tuple[_Member, ...]  # in order; the first is the header
    by_scope: dict[str, _Member]
    crc: int  # of the whole block's text
    plain: int


@dataclass(frozen=True, slots=True)
class Exposition:
    """A rendered exposition: deflate segments, one byte string per family, and the CRC-32
    and length of the whole text (what a gzip trailer needs)."""

    blocks: tuple[_Block, ...] = ()
    crc: int = 0
    plain_length: int = 0

    @property
    def segments(self) -> tuple[bytes, ...]:
        """The blocks' deflate data, to send between a gzip header and trailer."""
        return tuple(b.data for b in self.blocks)

    @property
    def gzip_parts(self) -> tuple[bytes, ...]:
        """The exposition alone as one gzip member, in parts sent back to back."""
        return gzipstream.stream(self.segments, self.crc, self.plain_length)

    def plain(self) -> Iterator[bytes]:
        """The plain text, inflated a piece of about 256 KiB at a time (never held whole;
        few pieces, so a writer can gather them in one system call)."""
        buffer = bytearray()
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # the segments make one raw stream
        for block in self.blocks:
            data: bytes | memoryview = memoryview(block.data)
            while data:
                buffer += inflater.decompress(data, _PIECE)
                data = inflater.unconsumed_tail
                if len(buffer) >= _PIECE:
                    yield bytes(buffer)
                    buffer.clear()
        buffer += inflater.flush()
        if buffer:
            yield bytes(buffer)

    def text(self) -> bytes:
        return b"".join(self.plain())


_Chunk = tuple[str, object, "bytes | memoryview", int, int]  # scope, key, data, plain, crc


class Renderer:
    """Renders parts into an :class:`Exposition`, reusing what did not change.

    Not thread-safe: one poller publishes at a time. ``enabled``: the groups whose families
    are written (the exporter's own always are).
    """

    def __init__(self, enabled: frozenset[str] = ALL_GROUPS, *, level: int = GZIP_LEVEL) -> None:
        self.enabled = frozenset(enabled)
        self.level = level
        self.escape = Escaper()
        self._last: dict[str, _Block] = {}
        self.written = 0  # parts written by the last render (the rest were reused)

    def render(self, families: Sequence[Family], parts: Iterable[Part]) -> Exposition:
        """``families`` in exposition order (each gets its header even without samples);
        ``parts`` in any order, a part of a family not listed is dropped."""
        wanted = {f.name: f for f in families if enabled_family(f, self.enabled)}
        chunks: dict[str, list[_Chunk]] = {n: [] for n in wanted}
        written, rewritten = 0, set()
        for part in parts:
            name = part.family.name
            if name not in wanted:
                continue
            reused = self._reuse(name, part)
            if reused is None:
                segment = _deflate(part.write(), self.level)
                data: bytes | memoryview = segment.data
                plain, crc = segment.length, segment.crc
                written += 1
                rewritten.add(name)
            else:
                data, plain, crc = reused
            chunks[name].append((part.scope, part.key, data, plain, crc))
        blocks = tuple(
            self._block(wanted[name], members, name in rewritten)
            for name, members in chunks.items()
        )
        self._last = {b.family.name: b for b in blocks}
        self.escape.next_generation()
        self.written = written
        crc = 0
        for block in blocks:
            crc = gzipstream.crc32_combine(crc, block.crc, block.plain)
        return Exposition(blocks, crc, sum(block.plain for block in blocks))

    def _reuse(self, name: str, part: Part) -> tuple[memoryview, int, int] | None:
        block = self._last.get(name)
        if block is None or part.key is None:
            return None
        member = block.by_scope.get(part.scope)
        if member is None or (member.key is not part.key and member.key != part.key):
            return None
        return memoryview(block.data)[member.start : member.end], member.plain, member.crc

    def _block(self, family: Family, chunks: list[_Chunk], rewritten: bool) -> _Block:
        last = self._last.get(family.name)
        if (
            not rewritten
            and last is not None
            and [c[0] for c in chunks] == [m.scope for m in last.members[1:]]
        ):
            return last  # every part reused, in the same order: the same bytes
        if last is not None:
            first = last.members[0]
            header = _Member("#", None, 0, first.end, first.plain, first.crc)
            head: bytes | memoryview = memoryview(last.data)[: first.end]
        else:
            segment = _deflate(family.header, self.level)
            head = segment.data
            header = _Member("#", None, 0, len(head), segment.length, segment.crc)
        members, pieces = [header], [head]
        at, crc, length = len(head), header.crc, header.plain
        for scope, key, data, plain, part_crc in chunks:
            members.append(_Member(scope, key, at, at + len(data), plain, part_crc))
            at += len(data)
            pieces.append(data)
            crc, length = gzipstream.crc32_combine(crc, part_crc, plain), length + plain
        by_scope = {m.scope: m for m in members[1:]}
        return _Block(family, b"".join(pieces), tuple(members), by_scope, crc, length)
