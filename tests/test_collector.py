"""Snapshot to metrics: the inventory families, the golden exposition, own metrics."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

from prometheus_client.parser import text_string_to_metric_families

from do_exporter.metrics.selfmetrics import ExporterMetrics
from do_exporter.metrics.snapshot import render
from do_exporter.model import AccountSnapshot, Namespace, NamespaceCount, Snapshot

GOLDEN = Path(__file__).parent / "golden" / "exposition.txt"
A, B = "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"


def snapshot() -> Snapshot:
    listed = AccountSnapshot(
        account_id=A,
        namespaces=(
            Namespace("ns1", "shop_Cart", "Cart", "shop", True),
            Namespace("ns2", None, None, None, None),
            Namespace("ns3", "new", "New", "shop", False),
        ),
        counts=MappingProxyType(
            {
                "ns1": NamespaceCount(1500, 600, 1795867200.0),
                "ns2": NamespaceCount(0, 0, 1795867100.5),
            }
        ),
        last_poll_success=False,
        last_success_at=1795867000.0,
        last_poll_duration=2.5,
        polls_success=3,
        polls_failure=1,
        namespaces_listed=True,
    )
    never_listed = AccountSnapshot(account_id=B, last_poll_duration=0.25, polls_failure=2)
    return Snapshot(accounts=(listed, never_listed), generation=4)


class Samples:
    """Sample values of a text exposition, looked up like a registry's."""

    def __init__(self, text: str) -> None:
        self._values = {
            (s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
        }

    def get_sample_value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return self._values.get((name, frozenset((labels or {}).items())))


def registry_with(snap: Snapshot) -> Samples:
    return Samples(render(snap).decode())


def test_golden_exposition() -> None:
    """The full rendering of a known snapshot, byte for byte (review diffs by hand)."""
    assert render(snapshot()).decode() == GOLDEN.read_text()


def test_values_and_labels() -> None:
    """Counts, info labels and self metrics carry the snapshot's values."""
    reg = registry_with(snapshot())
    ns1 = {"account_id": A, "namespace_id": "ns1", "namespace_name": "shop_Cart"}
    assert reg.get_sample_value("cloudflare_durable_objects_objects", ns1) == 1500
    assert reg.get_sample_value("cloudflare_durable_objects_objects_with_stored_data", ns1) == 600
    assert reg.get_sample_value("cloudflare_durable_objects_namespaces", {"account_id": A}) == 3
    assert (
        reg.get_sample_value("cloudflare_durable_objects_sqlite_namespaces", {"account_id": A}) == 1
    )
    info = {**ns1, "class": "Cart", "script": "shop", "use_sqlite": "true"}
    assert reg.get_sample_value("cloudflare_durable_objects_namespace_info", info) == 1
    missing = {
        "account_id": A,
        "namespace_id": "ns2",
        "namespace_name": "",
        "class": "",
        "script": "",
        "use_sqlite": "",
    }
    assert reg.get_sample_value("cloudflare_durable_objects_namespace_info", missing) == 1
    assert (
        reg.get_sample_value(
            "cloudflare_durable_objects_exporter_polls_total",
            {"account_id": A, "result": "failure"},
        )
        == 1
    )
    assert (
        reg.get_sample_value(
            "cloudflare_durable_objects_exporter_namespace_last_success_timestamp_seconds",
            {"account_id": A, "namespace_id": "ns2"},
        )
        == 1795867100.5
    )


def test_uncounted_namespace_has_info_but_no_count() -> None:
    """A namespace listed but never counted shows its info, not a made-up 0."""
    reg = registry_with(snapshot())
    labels = {"account_id": A, "namespace_id": "ns3", "namespace_name": "new"}
    assert reg.get_sample_value("cloudflare_durable_objects_objects", labels) is None
    assert (
        reg.get_sample_value(
            "cloudflare_durable_objects_namespace_info",
            {**labels, "class": "New", "script": "shop", "use_sqlite": "false"},
        )
        == 1
    )


def test_never_listed_account_shows_only_health() -> None:
    """An account whose list never succeeded has no namespace gauge (0 would be a lie)."""
    reg = registry_with(snapshot())
    assert reg.get_sample_value("cloudflare_durable_objects_namespaces", {"account_id": B}) is None
    assert (
        reg.get_sample_value(
            "cloudflare_durable_objects_exporter_last_poll_success", {"account_id": B}
        )
        == 0
    )
    assert (
        reg.get_sample_value(
            "cloudflare_durable_objects_exporter_last_poll_timestamp_seconds", {"account_id": B}
        )
        is None
    )


def test_label_values_are_escaped_and_parse_back() -> None:
    """Quotes, backslashes, newlines and non-ASCII survive a render and parse."""
    weird = 'we"ird\\name\nline2 ünïcødé 🚀'
    snap = Snapshot(
        accounts=(
            AccountSnapshot(
                account_id=A,
                namespaces=(Namespace("x", weird, weird, weird, True),),
                counts=MappingProxyType({"x": NamespaceCount(1, 1, 1.0)}),
                namespaces_listed=True,
            ),
        )
    )
    parsed = {f.name: f for f in text_string_to_metric_families(render(snap).decode())}
    [sample] = parsed["cloudflare_durable_objects_namespace_info"].samples
    assert sample.labels["namespace_name"] == weird
    assert sample.labels["class"] == weird


def test_no_label_called_namespace_and_no_created_series() -> None:
    """Kubernetes owns the `namespace` label; the contract has no _created series."""
    metrics = ExporterMetrics()
    metrics.request_finished("objects", "200", 0.1)
    metrics.api_error("objects", "10000")
    text = render(snapshot()).decode() + _render_self(metrics)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            assert "namespace" not in s.labels
            assert not s.name.endswith("_created")


def _render_self(metrics: ExporterMetrics) -> str:
    return metrics.exposition().decode()


def test_self_metrics_start_at_zero_and_count() -> None:
    """Error series exist at 0 before any failure; requests and histograms count."""
    metrics = ExporterMetrics()
    reg = _Live(metrics)
    errors = "cloudflare_durable_objects_exporter_api_errors_total"
    assert reg.get_sample_value(errors, {"endpoint": "objects", "error_code": "transport"}) == 0
    metrics.request_finished("objects", "200", 0.2)
    metrics.request_finished("objects", "200", 0.3)
    assert (
        reg.get_sample_value(
            "cloudflare_durable_objects_exporter_api_requests_total",
            {"endpoint": "objects", "code": "200"},
        )
        == 2
    )
    assert (
        reg.get_sample_value(
            "cloudflare_durable_objects_exporter_api_request_duration_seconds_count",
            {"endpoint": "objects"},
        )
        == 2
    )
    assert (
        reg.get_sample_value(
            "cloudflare_durable_objects_exporter_build_info",
            {"version": __import__("do_exporter").__version__},
        )
        == 1
    )
    assert (
        reg.get_sample_value(
            "cloudflare_durable_objects_exporter_api_ratelimit_remaining", {"credential": "default"}
        )
        is None
    )
    metrics.ratelimit_remaining(17)
    assert (
        reg.get_sample_value(
            "cloudflare_durable_objects_exporter_api_ratelimit_remaining",
            {"credential": "default"},
        )
        == 17
    )


def test_per_budget_self_metrics_carry_the_credential() -> None:
    """Remaining budget and reserve waits are per credential; each budget starts at 0."""
    from do_exporter.ratelimit import RateLimiter

    metrics = ExporterMetrics()
    now = [100.0]
    for name in ("agency-a", "agency-b"):
        metrics.add_budget(name, RateLimiter(1000, reserve=240, clock=lambda: now[0]))
    reg = _Live(metrics)
    wait = "cloudflare_durable_objects_exporter_api_reserve_wait_seconds_total"
    assert reg.get_sample_value(wait, {"credential": "agency-a"}) == 0
    metrics.for_credential("agency-b").ratelimit_remaining(200)
    metrics._budgets["agency-b"].observe(200, 30.0)  # at the reserve: held 30 s
    remaining = "cloudflare_durable_objects_exporter_api_ratelimit_remaining"
    assert reg.get_sample_value(remaining, {"credential": "agency-b"}) == 200
    assert reg.get_sample_value(remaining, {"credential": "agency-a"}) is None
    assert reg.get_sample_value(wait, {"credential": "agency-b"}) == 30
    assert reg.get_sample_value(wait, {"credential": "agency-a"}) == 0


class _Live:
    """Reads an ExporterMetrics' current text on every lookup."""

    def __init__(self, metrics: ExporterMetrics) -> None:
        self._metrics = metrics

    def get_sample_value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return Samples(self._metrics.text()).get_sample_value(name, labels)
