"""The pure parsers with canned bodies and headers: no network."""

from __future__ import annotations

import json

import pytest

from do_exporter.cloudflare import (
    CloudflareAPIError,
    parse_envelope,
    parse_objects_page,
    parse_ratelimit,
    parse_retry_after,
)
from tests.cf_helpers import env

# -- pure parsers ---------------------------------------------------------------------


def test_parse_ratelimit_both_header_styles() -> None:
    assert parse_ratelimit({"Ratelimit": '"default";r=50;t=30'}) == (50, 30.0)
    assert parse_ratelimit({"X-RateLimit-Remaining": "7", "X-RateLimit-Reset": "12"}) == (7, 12.0)
    assert parse_ratelimit({}) == (None, None)
    # Only ASCII digits, at most 15 of them; anything else is unknown, not an error.
    assert parse_ratelimit({"X-RateLimit-Remaining": "\u00b2", "Ratelimit": "r=\u00b2"}) == (
        None,
        None,
    )
    assert parse_ratelimit({"Ratelimit": f"r={'9' * 16};t=5"}) == (None, 5.0)


def test_parse_retry_after_seconds_and_date() -> None:
    assert parse_retry_after("120") == 120
    assert parse_retry_after("Sat, 28 Nov 2026 12:00:30 GMT", now=1795867200.0) == 30
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_parse_objects_page_counts_stored_flags() -> None:
    """hasStoredData true counts; false, null or absent does not."""
    body = json.dumps(
        env(
            [
                {"id": "1", "hasStoredData": True},
                {"id": "2", "hasStoredData": None},
                {"id": "3", "hasStoredData": False},
                {"id": "4"},
            ],
            {"cursor": "n"},
        )
    ).encode()
    page = parse_objects_page(200, body)
    assert (page.count, page.with_stored_data, page.cursor) == (4, 1, "n")


def test_parse_objects_page_wrong_flag_type_is_invalid() -> None:
    """A flag of the wrong type makes the page unusable rather than silently miscounted."""
    body = json.dumps(env([{"id": "1", "hasStoredData": "true"}], {"cursor": ""})).encode()
    with pytest.raises(CloudflareAPIError) as info:
        parse_objects_page(200, body)
    assert info.value.kind == "invalid_response"


def test_parse_envelope_html_error_page() -> None:
    with pytest.raises(CloudflareAPIError) as info:
        parse_envelope("objects", 503, b"<html>Service unavailable</html>", "ray")
    assert (info.value.kind, info.value.status, info.value.cf_ray) == ("http", 503, "ray")



def test_x_ratelimit_reset_as_an_http_date() -> None:
    """Cloudflare documented X-RateLimit-Reset as an RFC 1123 date: it is read as one."""
    import email.utils
    import time

    from do_exporter.cloudflare import parse_ratelimit

    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    remaining, reset = parse_ratelimit({"X-RateLimit-Remaining": "3", "X-RateLimit-Reset": when})
    assert remaining == 3 and reset is not None and 115 < reset <= 120
    assert parse_ratelimit({"X-RateLimit-Reset": "not a date"}) == (None, None)


def test_error_codes_are_bounded_labels() -> None:
    """Known Cloudflare codes keep their number; any other is "other"; an error keeps the
    first few codes and short messages whatever the answer carries."""
    from do_exporter.cloudflare import error_code_label

    assert error_code_label(10000) == "10000" and error_code_label(123456) == "other"
    errors = [{"code": c, "message": "m" * 10_000} for c in range(20_000)]
    body = json.dumps({"success": False, "errors": errors}).encode()
    with pytest.raises(CloudflareAPIError) as info:
        parse_envelope("namespaces", 400, body)
    assert len(info.value.codes) <= 10 and all(len(m) <= 200 for m in info.value.messages)
    assert info.value.error_codes == ("other",)
    huge = b'{"success": false, "errors": [{"code": 1' + b"0" * 5000 + b"}]}"
    with pytest.raises(CloudflareAPIError) as info:
        parse_envelope("namespaces", 400, huge)
    assert info.value.codes in ((), (-1,)) and len(str(info.value)) < 300
