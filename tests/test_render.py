"""The renderer: generate_latest's bytes, written once per change, held as gzip members."""

from __future__ import annotations

import gzip
from dataclasses import replace
from types import MappingProxyType

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from do_exporter import analytics
from do_exporter.metrics import contract
from do_exporter.metrics.groups import GROUPS, INVENTORY, USAGE
from do_exporter.metrics.render import escape, number
from do_exporter.metrics.snapshot import SnapshotRenderer, render
from do_exporter.model import AccountSnapshot, Namespace, NamespaceCount, Snapshot
from tests.support import loaded_by

A, B = "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"


def account(acc: str, n: int, objects: int = 10) -> AccountSnapshot:
    namespaces = tuple(Namespace(f"{acc[:8]}{i:024x}", f"w_{i}", f"C{i}", "w", i % 2 == 0)
                       for i in range(n))  # fmt: skip
    counts = {ns.id: NamespaceCount(objects + i, i, 1.7e9 + i) for i, ns in enumerate(namespaces)}
    return AccountSnapshot(acc, namespaces, MappingProxyType(counts), True, 1.7e9, 2.5, 3, 1,
                           True)  # fmt: skip


def usage_state(acc: str, ids: list[str]) -> analytics.AnalyticsState:
    sums = analytics.NamespaceUsage(requests=5230, cpu_time_us=10_460_000, duration_gb_s=1.25,
                                    websocket_inbound=120, exceeded_cpu=2)  # fmt: skip
    return analytics.AnalyticsState(
        acc, watermark=1_717_200_000, first_start=1_717_199_700,
        counters=MappingProxyType(dict.fromkeys(ids, sums)),
        websockets=MappingProxyType(dict.fromkeys(ids, 7)),
        stored_bytes=MappingProxyType(dict.fromkeys(ids, 98_000_000)),
        account_stored_bytes=123, last_success_at=1_717_200_001.5,
    )  # fmt: skip


def with_analytics(snapshot: Snapshot) -> Snapshot:
    states = {a.account_id: usage_state(a.account_id, [ns.id for ns in a.namespaces])
              for a in snapshot.accounts}  # fmt: skip
    return replace(snapshot, analytics=MappingProxyType(states))


class _Fixed(Collector):
    def __init__(self, metrics: list) -> None:  # type: ignore[type-arg]
        self._metrics = metrics

    def collect(self):  # type: ignore[no-untyped-def]
        return iter(self._metrics)


def test_analytics_families_are_generate_latests_bytes() -> None:
    """The usage families come out exactly as prometheus-client wrote them, account by
    account, with the inventory before them."""
    snap = with_analytics(Snapshot((account(A, 3), account(B, 2)), generation=1))
    listed = {a.account_id: a.namespaces for a in snap.accounts}
    expected = generate_latest(_Fixed(analytics.families(snap.analytics.values(), listed)))
    text = render(snap)
    assert text.endswith(expected)
    assert text.startswith(b"# HELP cloudflare_durable_objects_namespaces ")


def test_numbers_as_go_prints_them() -> None:
    for value in (0.0, 1.0, 1.7958672e9, 123456.0, 1234567.0, 2.5e-7, -3.0, float("inf")):
        from prometheus_client.utils import floatToGoString

        assert number(value) == floatToGoString(value)


def test_a_second_render_of_the_same_data_writes_nothing_new() -> None:
    """Unchanged accounts are not written again; a changed one is, alone; the result is
    byte for byte a fresh render's, as plain text and as one gzip stream."""
    first = with_analytics(Snapshot((account(A, 50), account(B, 50)), generation=1))
    renderer = SnapshotRenderer()
    renderer.render(first)
    assert renderer.render(first).text() == render(first)
    assert renderer.renderer.written <= 8  # account-level families only (keyed by text)
    changed = account(B, 50, objects=99)
    second = replace(first, accounts=(first.accounts[0], changed))
    out = renderer.render(second)
    assert 3 <= renderer.renderer.written <= 12  # B's counted families, not A's, not usage
    assert out.text() == render(second)
    assert gzip.decompress(b"".join(out.gzip_parts)) == out.text()
    assert out.plain_length == len(out.text())


def test_help_and_type_once_per_family_whatever_the_accounts() -> None:
    snap = with_analytics(Snapshot(tuple(account(f"{i:032x}", 3) for i in range(5))))
    text = render(snap).decode()
    helps = [line for line in text.splitlines() if line.startswith("# HELP ")]
    assert len(helps) == len(set(helps))
    names = [f.name for f in text_string_to_metric_families(text)]
    assert len(names) == len(set(names))


def test_a_group_turned_off_is_not_rendered() -> None:
    snap = with_analytics(Snapshot((account(A, 3),)))
    text = render(snap, frozenset(GROUPS) - {INVENTORY, USAGE}).decode()
    assert "cloudflare_durable_objects_objects{" not in text
    assert "# HELP cloudflare_durable_objects_namespace_info" not in text
    assert "cloudflare_durable_objects_requests_total" not in text
    assert "cloudflare_durable_objects_stored_bytes{" in text  # storage stays on
    assert "exporter_last_poll_success{" in text  # the exporter's own always


def test_a_lone_surrogate_in_any_label_never_crashes() -> None:
    """Text from outside that is not valid UTF-8 is replaced, in inventory and analytics
    labels alike (a namespace id the list does not hold comes from GraphQL)."""
    bad = "bad\ud800name"
    acc = AccountSnapshot(A, (Namespace("x", bad, bad, "\udfff", None),),
                          MappingProxyType({"x": NamespaceCount(1, 1, 1.0)}), True,
                          namespaces_listed=True)  # fmt: skip
    snap = Snapshot((acc,), analytics=MappingProxyType({A: usage_state(A, ["\ud800", "x"])}))
    text = render(snap).decode("utf-8")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    [info] = families["cloudflare_durable_objects_namespace_info"].samples
    assert info.labels["namespace_name"] == "bad\ufffdname"
    ids = {
        s.labels["namespace_id"] for s in families["cloudflare_durable_objects_requests"].samples
    }
    assert ids == {"\ufffd", "x"}
    assert escape('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_every_family_of_the_contract_is_declared_once() -> None:
    names = [f.name for f in contract.FAMILIES]
    assert len(names) == len(set(names))
    for f in contract.FAMILIES:
        assert f.name.startswith(contract.PREFIX + "_")
        assert f.group is None or f.group in GROUPS
        assert (f.type == "counter") == f.name.endswith("_total")
        assert "namespace" not in f.labels


def test_the_metrics_side_imports_no_http_client() -> None:
    """do_exporter.metrics (and the store) import neither the client nor requests."""
    loaded = loaded_by("do_exporter.store", "do_exporter.metrics.selfmetrics",
                       "do_exporter.metrics.tokens")  # fmt: skip
    client = {"requests", "do_exporter.cloudflare", "do_exporter.ratelimit", "urllib3"}
    assert client & loaded == set()


def test_the_analytics_builder_may_hand_rows_instead_of_objects(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """With ``analytics.family_rows`` present, its rows are written in contract order."""

    def family_rows(state, namespaces):  # type: ignore[no-untyped-def]
        names = {ns.id: ns.name or "" for ns in namespaces}
        rows = [((state.account_id, i, names.get(i, "")), 2.0) for i in sorted(state.counters)]
        yield contract.REQUESTS, rows

    monkeypatch.setattr(analytics, "family_rows", family_rows, raising=False)
    text = render(with_analytics(Snapshot((account(A, 2),)))).decode()
    assert f'requests_total{{account_id="{A}",namespace_id="{A[:8]}{0:024x}"' in text
    assert "# TYPE cloudflare_durable_objects_hot_object_cpu_ratio gauge" in text
    assert "cloudflare_durable_objects_errors_total{" not in text


def _rich_state(acc: str, ids: list[str]) -> analytics.AnalyticsState:
    """Every kind of analytics series: statuses, percentiles (one namespace without a
    counter, so without _sum/_count), hot objects."""
    state = usage_state(acc, ids)
    lat = analytics.Latency(MappingProxyType({"0.5": 1500.0, "0.99": 48_000.0}), 250_000.0)
    hot = analytics.HotObjects(300, (analytics.HotObject(ids[0], "a" * 64, 60),),
                               (analytics.HotObject(ids[-1], "b" * 64, 240_000_000),))  # fmt: skip
    other = "9" * 32
    return replace(
        state, hot=hot,
        statuses=MappingProxyType({i: MappingProxyType({"success": 90, "other": 3}) for i in ids}),
        latency=MappingProxyType({**dict.fromkeys(ids, lat), other: lat}),
    )  # fmt: skip


def test_rows_and_prometheus_objects_write_the_same_bytes(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """family_rows through the renderer, the prometheus-client fallback, and generate_latest
    of analytics.families agree byte for byte, every kind of series included."""
    snap = with_analytics(Snapshot((account(A, 3), account(B, 2)), generation=1))
    states = {a.account_id: _rich_state(a.account_id, [ns.id for ns in a.namespaces])
              for a in snap.accounts}  # fmt: skip
    snap = replace(snap, analytics=MappingProxyType(states))
    rows = render(snap)
    listed = {a.account_id: a.namespaces for a in snap.accounts}
    expected = generate_latest(_Fixed(analytics.families(snap.analytics.values(), listed)))
    assert rows.endswith(expected) and b"_count{" in rows and b"hot_object_cpu_ratio{" in rows
    monkeypatch.delattr(analytics, "family_rows")
    assert render(snap) == rows
