"""Scenario validation and the deterministic id / stored-data / cursor derivations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from do_exporter.simulator import Scenario, ScenarioError, demo_scenario, load_scenario
from do_exporter.simulator.ids import (
    decode_cursor,
    encode_cursor,
    has_stored_data,
    namespace_key,
    object_id,
    object_ids_hex,
    ratio_fraction,
    stored_count,
    stored_flags,
)
from do_exporter.simulator.pages import objects_json as _objects_json

ACC = "0123456789abcdef0123456789abcdef"


def minimal(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"accounts": [{"id": ACC, "namespaces": [{"objects": 3}]}]}
    data.update(overrides)
    return data


def test_defaults_follow_the_real_api() -> None:
    """Left out: /client/v4, both cursor shapes, 1,200 per 300 s, no faults, one token."""
    scenario = Scenario.from_dict(minimal())
    assert scenario.base_path == "/client/v4"
    assert scenario.cursor_shape == "both"
    assert (scenario.rate_limit.requests, scenario.rate_limit.window_seconds) == (1200, 300.0)
    assert scenario.faults.rules == () and scenario.faults.latency_ms == 0
    assert len(scenario.tokens) == 1 and scenario.tokens[0].accounts is None
    assert len(scenario.tokens[0].value) == 40


def test_missing_ids_are_derived_from_the_seed() -> None:
    """Accounts and namespaces without ids get stable 32-hex ids that depend on the seed."""
    one = Scenario.from_dict({"seed": 1, "accounts": [{"namespaces": [{}]}]})
    again = Scenario.from_dict({"seed": 1, "accounts": [{"namespaces": [{}]}]})
    other = Scenario.from_dict({"seed": 2, "accounts": [{"namespaces": [{}]}]})
    assert one == again
    assert one.accounts[0].id != other.accounts[0].id
    assert len(one.accounts[0].namespaces[0].id) == 32


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ([], "scenario"),
        ({}, "accounts"),
        (minimal(seed=-1), "seed"),
        (minimal(base_path="client/v4"), "base_path"),
        (minimal(cursor_shape="after"), "cursor_shape"),
        (minimal(max_per_page=0), "max_per_page"),
        (minimal(max_limit=10001), "max_limit"),
        (minimal(rate_limit={"requests": 0}), "rate_limit.requests"),
        (minimal(rate_limit={"window_seconds": 0}), "rate_limit.window_seconds"),
        (minimal(rate_limit={"burst": 1}), "rate_limit"),
        (minimal(tokens=[]), "tokens"),
        (minimal(tokens=[{"value": "has space"}]), "tokens[0].value"),
        (minimal(tokens=[{"value": "a"}, {"value": "a"}]), "tokens[1].value"),
        (minimal(tokens=[{"value": "a", "accounts": ["f" * 32]}]), "tokens[0].accounts"),
        (minimal(tokens=[{"value": "a", "owner": "account"}]), "tokens[0].accounts"),
        (minimal(tokens=[{"value": "a", "status": "sleepy"}]), "tokens[0].status"),
        (minimal(faults={"latency_ms": -5}), "faults.latency_ms"),
        (minimal(faults={"rules": {}}), "faults.rules"),
        ({"accounts": [{"id": ACC}, {"id": ACC}]}, "accounts[1].id"),
        ({"accounts": [{"id": ACC.upper()}]}, "accounts[0].id"),
        ({"accounts": [{"namespaces": [{"objects": -1}]}]}, "accounts[0].namespaces[0].objects"),
        ({"accounts": [{"namespaces": [{"stored_data_ratio": 1.5}]}]}, "stored_data_ratio"),
        ({"accounts": [{"namespaces": [{"use_sqlite": "yes"}]}]}, "use_sqlite"),
        ({"accounts": [{"namespaces": [{"growth_per_minute": "fast"}]}]}, "growth_per_minute"),
        ({"accounts": [{"namespaces": [{"id": "1" * 32}, {"id": "1" * 32}]}]}, "namespaces[1]"),
        ({"accounts": [{"namespaces": [{"colour": "red"}]}]}, "unknown key 'colour'"),
        ({"accounts": [{"namespaces": [{"analytics": {"hot_objects": 0}}]}]}, "hot_objects"),
        ({"accounts": [{"namespaces": [{"analytics": {"hot_objects": 2.5}}]}]}, "hot_objects"),
        (
            {"accounts": [{"namespaces": [{"analytics": {"client_disconnect_rate": 2}}]}]},
            "client_disconnect_rate",
        ),
    ],
)
def test_bad_scenarios_name_the_key(data: Any, where: str) -> None:
    """Each kind of bad scenario raises ScenarioError with a one-line message naming the key."""
    with pytest.raises(ScenarioError) as caught:
        Scenario.from_dict(data)
    message = str(caught.value)
    assert where in message and "\n" not in message


def test_load_scenario_reads_json_files(tmp_path: Path) -> None:
    """load_scenario parses a file; a bad one names the file."""
    path = tmp_path / "s.json"
    path.write_text(json.dumps(minimal(seed=9)))
    assert load_scenario(path).seed == 9
    path.write_text(json.dumps({"accounts": 3}))
    with pytest.raises(ScenarioError, match=r"s\.json: accounts"):
        load_scenario(path)
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.json")


def test_demo_scenario_is_valid_and_stable() -> None:
    """The built-in demo loads and is the same each time."""
    assert demo_scenario() == demo_scenario()


def test_demo_has_a_hot_object() -> None:
    """--demo shows the busiest objects: one namespace's traffic is spread over a few
    objects, the first of which keeps more than half of its thread busy."""
    hot = [
        n for a in demo_scenario().accounts for n in a.namespaces
        if n.analytics is not None and n.analytics.hot_objects
    ]  # fmt: skip
    assert hot and hot[0].analytics is not None
    t = hot[0].analytics
    assert t.requests_per_minute is not None
    share = 60 / sum((60, 30, 20)[: t.hot_objects])  # ZIPF shares of the first object
    assert t.requests_per_minute * t.cpu_ms_per_request / 60_000 * share > 0.5


# ---- ids -----------------------------------------------------------------------------------------
KEY = namespace_key(1, ACC, "1" * 32)


@given(start=st.integers(0, 5000), count=st.integers(0, 300))
def test_ids_do_not_depend_on_page_alignment(start: int, count: int) -> None:
    """Ids of a range equal the ids fetched one by one (blocks are invisible)."""
    joined = object_ids_hex(KEY, start, count)
    assert len(joined) == 64 * count
    for offset in range(0, count, 37):
        assert joined[64 * offset : 64 * offset + 64] == object_id(KEY, start + offset)


def test_ids_are_unique_and_namespace_specific() -> None:
    """Ten thousand ids are distinct, and another namespace has other ids."""
    joined = object_ids_hex(KEY, 0, 10000)
    ids = {joined[i : i + 64] for i in range(0, len(joined), 64)}
    assert len(ids) == 10000
    assert object_id(namespace_key(1, ACC, "2" * 32), 0) not in ids


def test_ids_are_lowercase_hex_with_even_digits() -> None:
    """Ids are lowercase hex, every digit about 1/16 of them, and distinct across blocks."""
    joined = object_ids_hex(KEY, 10**9, 50 * 1024)  # 50 blocks far into the namespace
    assert set(joined) <= set("0123456789abcdef")
    expected = len(joined) / 16
    assert all(abs(joined.count(d) - expected) < 0.02 * expected for d in "0123456789abcdef")
    assert len({joined[i : i + 64] for i in range(0, len(joined), 64)}) == 50 * 1024


@given(
    ratio=st.floats(0, 1, allow_nan=False),
    start=st.integers(0, 10**7),
    n=st.integers(0, 2500),
)
def test_objects_page_is_the_plain_json_of_each_object(ratio: float, start: int, n: int) -> None:
    """The page builder's bytes equal json.dumps of the per-object ids and flags."""
    fraction = ratio_fraction(ratio)
    joined = object_ids_hex(KEY, start, n)
    expected = [
        {"id": joined[64 * i : 64 * i + 64], "hasStoredData": has_stored_data(fraction, start + i)}
        for i in range(n)
    ]
    page = _objects_json(KEY, fraction, start, n, b"<head>", b"<tail>")
    assert page == b"<head>" + json.dumps(expected, separators=(",", ":")).encode() + b"<tail>"


@given(ratio=st.floats(0, 1, allow_nan=False), start=st.integers(0, 10**6), n=st.integers(0, 2000))
def test_stored_flags_match_the_exact_count(ratio: float, start: int, n: int) -> None:
    """Tiled flags equal per-index flags, and their sum is exactly what stored_count says."""
    fraction = ratio_fraction(ratio)
    flags = stored_flags(fraction, start, n)
    assert flags == [has_stored_data(fraction, i) for i in range(start, start + n)]
    assert sum(stored_flags(fraction, 0, start + n)) == stored_count(fraction, start + n)


@pytest.mark.parametrize(("ratio", "n", "stored"), [(0, 10, 0), (1, 10, 10), (0.3, 2345, 703)])
def test_stored_count_examples(ratio: float, n: int, stored: int) -> None:
    """Exactly floor(n * ratio) objects have stored data."""
    assert stored_count(ratio_fraction(ratio), n) == stored


@given(index=st.integers(0, 2**63 - 1))
def test_cursor_round_trip(index: int) -> None:
    """A cursor decodes to its index for its namespace only."""
    secret = b"s"
    cursor = encode_cursor(KEY, secret, index)
    assert decode_cursor(KEY, secret, cursor) == index
    assert decode_cursor(namespace_key(1, ACC, "3" * 32), secret, cursor) is None
    assert decode_cursor(KEY, b"other", cursor) is None


@pytest.mark.parametrize("cursor", ["", "!!!", "AAAA", "A" * 27, "ARNl_mpR98GlAAAAAAAAJxD5Mfm"])
def test_garbage_cursors_are_refused(cursor: str) -> None:
    """Anything that is not a cursor decodes to None."""
    assert decode_cursor(KEY, b"s", cursor) is None


def test_the_documented_scenario_example_loads() -> None:
    """The JSON example in docs/simulator.md (every key, users and permissions too) is valid."""
    text = (Path(__file__).parent.parent / "docs" / "simulator.md").read_text(encoding="utf-8")
    example = text.split("## Scenario format", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    scenario = Scenario.from_dict(json.loads(example))
    assert [u.name for u in scenario.users] == ["ops"]
    assert scenario.users[0].other_clients_per_minute == 40
    assert any(t.expires_on for t in scenario.tokens)
