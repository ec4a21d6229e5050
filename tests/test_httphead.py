"""The bounded request-head parser, on bytes (no sockets)."""

from __future__ import annotations

from http import HTTPStatus

from do_exporter.httphead import MAX_HEAD, Refusal, Request, parse_head

HEAD = (
    b"\r\nGET /metrics?x=1 HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzip\r\nX-A: 1\r\nx-a: 2\r\n\r\n"
)


def test_incomplete_until_the_blank_line_then_the_request() -> None:
    """Fed byte by byte, the head is incomplete until its blank line; the size covers the
    leading blank line and stops where a pipelined request would begin."""
    for end in range(len(HEAD)):
        assert parse_head(HEAD[:end]) is None, end
    request = parse_head(HEAD + b"GET /next")
    assert isinstance(request, Request)
    assert (request.method, request.target, request.version) == ("GET", "/metrics?x=1", "HTTP/1.1")
    assert request.headers == {"host": "h", "accept-encoding": "gzip", "x-a": "1, 2"}
    assert request.size == len(HEAD) and request.keep_alive


def test_bare_line_feeds_and_connection_semantics() -> None:
    assert parse_head(b"GET / HTTP/1.1\nConnection: close\n\n") == Request(
        "GET", "/", "HTTP/1.1", {"connection": "close"}, 34, keep_alive=False
    )
    ten = parse_head(b"GET / HTTP/1.0\r\n\r\n")
    assert isinstance(ten, Request) and ten.version == "HTTP/1.0" and not ten.keep_alive
    kept = parse_head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
    assert isinstance(kept, Request) and kept.keep_alive
    with_body = parse_head(b"GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
    assert isinstance(with_body, Request) and not with_body.keep_alive  # body never read


def test_limits_refuse_before_the_head_ends() -> None:
    """Too large, too many lines or a bad request line is refused as soon as it shows."""
    big = parse_head(b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD)
    assert isinstance(big, Refusal) and big.status == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
    many = parse_head(b"GET / HTTP/1.1\r\n" + b"A: b\r\n" * 70)
    assert isinstance(many, Refusal) and many.status == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
    h2 = parse_head(b"PRI * HTTP/2.0\r\n")
    assert isinstance(h2, Refusal) and h2.status == HTTPStatus.HTTP_VERSION_NOT_SUPPORTED
    bad = parse_head(b"GET /\x01 HTTP/1.1\r\n")
    assert isinstance(bad, Refusal) and bad.status == HTTPStatus.BAD_REQUEST
    assert parse_head(b"GET /x\r\n") == Request("GET", "/x", "HTTP/0.9", {}, 8, keep_alive=False)
    for value in (b"1, 1", b"-1", b"\xb2"):
        refused = parse_head(b"GET / HTTP/1.1\r\nContent-Length: " + value + b"\r\n\r\n")
        assert isinstance(refused, Refusal) and refused.status == HTTPStatus.BAD_REQUEST
