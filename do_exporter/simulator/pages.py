"""The list endpoints' pages: accounts and namespaces by page number, objects by cursor.

Callers have authenticated and authorised the request (``auth.py``) and charged the budget;
these functions read the query, the :class:`~do_exporter.simulator.data.Inventory` and build
the answer. An objects page of 10,000 ids is encoded straight into its answer buffer
(:func:`objects_json`), about 1 ms.
"""

from __future__ import annotations

import functools
import json
import math
from fractions import Fraction
from typing import Any

from do_exporter.simulator import responses as r
from do_exporter.simulator.data import Inventory
from do_exporter.simulator.faults import Fault, success
from do_exporter.simulator.ids import (
    ID_HEX,
    RECORD,
    decode_cursor,
    encode_cursor,
    id_text,
    stored_count,
    stored_flags,
)
from do_exporter.simulator.responses import Response
from do_exporter.simulator.scenario import Scenario

# An objects page is its ids' hex with a marker byte after each id: TRUE or FALSE (control
# bytes, in no id and no JSON text) becomes the text up to the next id.
_TRUE, _FALSE = b"\x01", b"\x02"
_OBJECTS_TRUE = b'","hasStoredData":true},{"id":"'
_OBJECTS_FALSE = b'","hasStoredData":false},{"id":"'
_FIRST_OBJECT = b'[{"id":"'  # as long as the ',{"id":"' that ends each separator
# Where an objects page puts a stale cursor on its first page (cursor_shape both-different):
# cursor-shaped, but no namespace's cursor, so it answers 400/6008 if sent back.
_GARBAGE_CURSOR = "AAAAAHN0YWxlLWN1cnNvci1kby1ub3QtZm9sbG93LW1l"


class Pages:
    """The pages of one scenario's data: its page-size caps, cursor shape and cursor key."""

    def __init__(self, scenario: Scenario, inventory: Inventory, *, seed: int) -> None:
        self._max_per_page = scenario.max_per_page
        self._max_limit = scenario.max_limit
        self._cursor_shape = scenario.cursor_shape
        self._inventory = inventory
        self._secret = f"cursor-secret-{seed}".encode()
        self._endless_secret = f"endless-cursor-secret-{seed}".encode()

    def accounts(
        self, reached: tuple[str, ...] | None, query: dict[str, str], fault: Fault | None
    ) -> Response:
        """``GET /accounts``: the accounts a token reaches (``reached``; None: all), by page
        number."""
        page = int_param(query, "page", 1, 1, 10**9)
        per_page = int_param(query, "per_page", 20, 5, 50)
        if isinstance(page, Response):
            return page
        if isinstance(per_page, Response):
            return per_page
        items = [
            {"id": a.id, "name": a.name, "type": "standard", "created_on": "2021-03-04T05:06:07Z"}
            for a in self._inventory.accounts()
            if reached is None or a.id in reached
        ]
        return _page(items, page, per_page, fault)

    def namespaces(self, account_id: str, query: dict[str, str], fault: Fault | None) -> Response:
        """``GET .../durable_objects/namespaces``: an account's namespaces, by page number."""
        page = int_param(query, "page", 1, 1, 10**9)
        per_page = int_param(query, "per_page", 20, 1, 1000)
        if isinstance(page, Response):
            return page
        if isinstance(per_page, Response):
            return per_page
        items = self._inventory.namespace_items(account_id)
        if self._max_per_page is not None:
            per_page = min(per_page, self._max_per_page)
        return _page(items, page, per_page, fault)

    def objects(
        self, account_id: str, namespace_id: str, query: dict[str, str], fault: Fault | None
    ) -> Response:
        """``GET .../namespaces/{id}/objects``: one page of ids after the query's cursor."""
        limit = int_param(query, "limit", 1000, 10, 10000)
        if isinstance(limit, Response):
            return limit
        if self._max_limit is not None:
            limit = min(limit, self._max_limit)
        ns = self._inventory.walkable(account_id, namespace_id)
        if ns is None:
            return r.error(404, r.NAMESPACE_NOT_FOUND)
        cursor = query.get("cursor", "")
        endless = fault is not None and fault.kind == "endless_cursor"
        start = 0
        if cursor:
            decoded = decode_cursor(ns.key, self._secret, cursor)
            if decoded is None and endless:
                decoded = decode_cursor(ns.key, self._endless_secret, cursor)
            if decoded is None:
                return r.bad_param("cursor is not a valid cursor for this namespace")
            start = decoded
        n = limit if endless else max(0, min(limit, ns.count - start))
        more = endless or start + n < ns.count
        # Pages the endless fault invents past the end get cursors of their own: once the
        # fault is cleared they are refused (400), never answered with an end that would
        # make the invented pages look like a complete count.
        secret = self._endless_secret if start + n >= ns.count else self._secret
        next_cursor = encode_cursor(ns.key, secret, start + n) if more else ""
        if fault is not None and fault.kind == "repeat_cursor":
            next_cursor = cursor or encode_cursor(ns.key, self._secret, 0)
        info = self._cursor_info(n, limit, cursor, next_cursor)
        self._inventory.served(n)
        key, ratio = ns.key, ns.ratio
        return success(
            lambda head, tail: objects_json(key, ratio, start, n, head, tail), info, fault
        )

    def _cursor_info(self, n: int, limit: int, cursor: str, next_cursor: str) -> dict[str, Any]:
        """``result_info`` of an objects page in the scenario's ``cursor_shape``."""
        info: dict[str, Any] = {"count": n, "per_page": limit}
        shape = self._cursor_shape
        if shape in ("both", "cursor"):
            info["cursor"] = next_cursor
        elif shape == "both-different":  # a stale cursor: this page's own, or garbage
            info["cursor"] = cursor or _GARBAGE_CURSOR
        if shape in ("both", "cursors", "both-different"):
            info["cursors"] = {"after": next_cursor}
        return info


def _page(items: list[dict[str, Any]], page: int, per_page: int, fault: Fault | None) -> Response:
    chunk = items[(page - 1) * per_page : page * per_page]
    info = {
        "page": page,
        "per_page": per_page,
        "count": len(chunk),
        "total_count": len(items),
        "total_pages": math.ceil(len(items) / per_page),
    }
    return success(json.dumps(chunk, separators=(",", ":")), info, fault)


def int_param(
    query: dict[str, str], name: str, default: int, low: int, high: int
) -> int | Response:
    """The query's integer ``name`` (``default`` when absent), or a 400 when out of range."""
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        return r.bad_param(f"{name} variable must be a number between {low} and {high}")
    return value


def objects_json(
    key: bytes, ratio: Fraction, start: int, n: int, head: bytes = b"", tail: bytes = b""
) -> bytearray:
    """``head``, the ``result`` list of an objects page, then ``tail``.

    Each block's hex ids come with a free byte after every id (:func:`id_text`); one strided
    slice assignment sets those bytes to ``hasStoredData`` markers, and two single-byte
    ``replace`` calls expand the markers into the JSON between ids. A block (about 95 kB) is
    worked at a time and copied into the answer, allocated once at its exact size, so the
    answer is the only large buffer and the allocator keeps reusing it instead of faulting in
    fresh pages: about 1 ms for 10,000 objects.
    """
    if n == 0:
        return bytearray(head + b"[]" + tail)
    with_data = stored_count(ratio, start + n) - stored_count(ratio, start)
    size = len(head) + n * (ID_HEX + len(_OBJECTS_FALSE)) - with_data + len(b"]" + tail)
    body = bytearray(size + len(_FIRST_OBJECT))  # room for the last, cut, separator
    period = _markers(ratio)
    q = len(period)
    offset = start % q
    marks = (period * ((offset + n) // q + 1))[offset : offset + n]
    with memoryview(body) as view:
        view[: len(head) + len(_FIRST_OBJECT)] = head + _FIRST_OBJECT
        at = len(head) + len(_FIRST_OBJECT)
        done = 0
        for piece in id_text(key, start, n):
            ids = len(piece) // RECORD
            piece[ID_HEX::RECORD] = marks[done : done + ids]
            done += ids
            text = piece.replace(_TRUE, _OBJECTS_TRUE).replace(_FALSE, _OBJECTS_FALSE)
            view[at : at + len(text)] = text
            at += len(text)
        # The last separator opened an object that does not exist: end the list there.
        view[at - len(_FIRST_OBJECT) : size] = b"]" + tail
    del body[size:]
    return body


@functools.lru_cache(maxsize=256)
def _markers(ratio: Fraction) -> bytes:
    """One period of ``hasStoredData`` markers, one byte per object."""
    return b"".join(_TRUE if flag else _FALSE for flag in stored_flags(ratio, 0, ratio.denominator))
