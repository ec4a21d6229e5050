"""One gzip member from pieces compressed apart: what every HTTP client can decode."""

from __future__ import annotations

import gzip
import zlib

from hypothesis import given
from hypothesis import strategies as st

from do_exporter.metrics import gzipstream

pieces = st.lists(st.binary(max_size=3000), max_size=8)


@given(pieces)
def test_the_crc_of_pieces_combines_into_the_crc_of_the_whole(texts: list[bytes]) -> None:
    crc = 0
    for text in texts:
        crc = gzipstream.crc32_combine(crc, zlib.crc32(text), len(text))
    assert crc == zlib.crc32(b"".join(texts))


@given(pieces, st.sampled_from([1, 6, 9]))
def test_segments_make_one_member_a_single_member_reader_decodes_whole(
    texts: list[bytes], level: int
) -> None:
    segments = [gzipstream.deflate(text, level) for text in texts]
    crc = 0
    for segment in segments:
        crc = gzipstream.crc32_combine(crc, segment.crc, segment.length)
    length = sum(segment.length for segment in segments)
    body = b"".join(gzipstream.stream([s.data for s in segments], crc, length))
    reader = zlib.decompressobj(16 + zlib.MAX_WBITS)  # stops at the end of the first member
    assert reader.decompress(body) == b"".join(texts)
    assert reader.eof and reader.unused_data == b""
    assert gzip.decompress(body) == b"".join(texts)  # the trailer's CRC and length check out
