"""Where a count becomes a metric: :func:`families` turns a :class:`Snapshot` into metric
families, as a pure function, and :func:`render` turns those into exposition bytes.

Example of what it produces (one account, one namespace)::

    # HELP cloudflare_durable_objects_namespaces Durable Objects namespaces in the account.
    # TYPE cloudflare_durable_objects_namespaces gauge
    cloudflare_durable_objects_namespaces{account_id="0123..."} 1.0
    # HELP cloudflare_durable_objects_sqlite_namespaces Namespaces using the SQLite storage backend.
    # TYPE cloudflare_durable_objects_sqlite_namespaces gauge
    cloudflare_durable_objects_sqlite_namespaces{account_id="0123..."} 1.0
    # HELP cloudflare_durable_objects_namespace_info Namespace metadata (always 1).
    # TYPE cloudflare_durable_objects_namespace_info gauge
    cloudflare_durable_objects_namespace_info{account_id="0123...",class="Counter",namespace_id="ab12...",namespace_name="counter",script="worker",use_sqlite="true"} 1.0
    # HELP cloudflare_durable_objects_objects Durable Objects in the namespace (last complete count).
    # TYPE cloudflare_durable_objects_objects gauge
    cloudflare_durable_objects_objects{account_id="0123...",namespace_id="ab12...",namespace_name="counter"} 1500.0
    # HELP cloudflare_durable_objects_objects_with_stored_data Durable Objects in the namespace that have stored data.
    # TYPE cloudflare_durable_objects_objects_with_stored_data gauge
    cloudflare_durable_objects_objects_with_stored_data{account_id="0123...",namespace_id="ab12...",namespace_name="counter"} 600.0
    # HELP cloudflare_durable_objects_exporter_last_poll_success Whether the last poll of the account read the namespace list and every count (1) or not (0).
    # TYPE cloudflare_durable_objects_exporter_last_poll_success gauge
    cloudflare_durable_objects_exporter_last_poll_success{account_id="0123..."} 1.0
    ...

The scrape path never calls this: the exporter renders each snapshot once, when it is
published (see :class:`~do_exporter.store.SnapshotStore`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from . import analytics
from .model import Snapshot

PREFIX = "cloudflare_durable_objects"
SELF = f"{PREFIX}_exporter"
NS_LABELS = ["account_id", "namespace_id", "namespace_name"]
INFO_LABELS = ["account_id", "namespace_id", "namespace_name", "class", "script", "use_sqlite"]


def _bool_label(value: bool | None) -> str:
    return "" if value is None else ("true" if value else "false")


class _ContractFamilies(NamedTuple):
    namespaces: GaugeMetricFamily
    sqlite: GaugeMetricFamily
    info: GaugeMetricFamily
    objects: GaugeMetricFamily
    with_data: GaugeMetricFamily
    success: GaugeMetricFamily
    last_ts: GaugeMetricFamily
    duration: GaugeMetricFamily
    polls: CounterMetricFamily
    ns_ts: GaugeMetricFamily
    refresh: GaugeMetricFamily


def _empty_families() -> _ContractFamilies:
    g = GaugeMetricFamily
    return _ContractFamilies(
        namespaces=g(
            f"{PREFIX}_namespaces",
            "Durable Objects namespaces in the account.",
            labels=["account_id"],
        ),
        sqlite=g(
            f"{PREFIX}_sqlite_namespaces",
            "Namespaces using the SQLite storage backend.",
            labels=["account_id"],
        ),
        info=g(f"{PREFIX}_namespace_info", "Namespace metadata (always 1).", labels=INFO_LABELS),
        objects=g(
            f"{PREFIX}_objects",
            "Durable Objects in the namespace (last complete count).",
            labels=NS_LABELS,
        ),
        with_data=g(
            f"{PREFIX}_objects_with_stored_data",
            "Durable Objects in the namespace that have stored data (last complete count).",
            labels=NS_LABELS,
        ),
        success=g(
            f"{SELF}_last_poll_success",
            "Whether the last poll of the account read the namespace list and every "
            "count (1) or not (0).",
            labels=["account_id"],
        ),
        last_ts=g(
            f"{SELF}_last_poll_timestamp_seconds",
            "Unix time at the end of the last successful poll of the account.",
            labels=["account_id"],
        ),
        duration=g(
            f"{SELF}_last_poll_duration_seconds",
            "How long the last poll of the account took.",
            labels=["account_id"],
        ),
        polls=CounterMetricFamily(
            f"{SELF}_polls", "Polls of the account, by result.", labels=["account_id", "result"]
        ),
        ns_ts=g(
            f"{SELF}_namespace_last_success_timestamp_seconds",
            "Unix time when the namespace's exported count was last complete.",
            labels=["account_id", "namespace_id"],
        ),
        refresh=g(
            f"{SELF}_full_refresh_seconds",
            "Seconds the last full refresh of every namespace took (grows past the "
            "interval when the request budget cannot count everything in one interval).",
        ),
    )


def families(snapshot: Snapshot) -> list[Metric]:
    """The metric families of the contract for one snapshot (pure; no I/O, no clock)."""
    f = _empty_families()
    for account in snapshot.accounts:
        acc = account.account_id
        f.success.add_metric([acc], 1.0 if account.last_poll_success else 0.0)
        f.polls.add_metric([acc, "success"], float(account.polls_success))
        f.polls.add_metric([acc, "failure"], float(account.polls_failure))
        if account.last_success_at is not None:
            f.last_ts.add_metric([acc], account.last_success_at)
        if account.last_poll_duration is not None:
            f.duration.add_metric([acc], account.last_poll_duration)
        if not account.namespaces_listed:
            continue  # never read: a 0 here would be a lie
        f.namespaces.add_metric([acc], float(account.namespace_count))
        f.sqlite.add_metric([acc], float(account.sqlite_namespaces))
        for ns in account.namespaces:
            name = ns.name or ""
            f.info.add_metric(
                [
                    acc,
                    ns.id,
                    name,
                    ns.class_name or "",
                    ns.script or "",
                    _bool_label(ns.use_sqlite),
                ],
                1.0,
            )
            count = account.counts.get(ns.id)
            if count is None:
                continue  # not counted yet: no value rather than a wrong one
            f.objects.add_metric([acc, ns.id, name], float(count.objects))
            f.with_data.add_metric([acc, ns.id, name], float(count.with_stored_data))
            f.ns_ts.add_metric([acc, ns.id], count.completed_at)
    if snapshot.full_refresh_seconds is not None:
        f.refresh.add_metric([], snapshot.full_refresh_seconds)
    result: list[Metric] = list(f)
    if snapshot.analytics:  # usage analytics: only when they are polled
        listed = {a.account_id: a.namespaces for a in snapshot.accounts if a.namespaces_listed}
        result.extend(analytics.families(snapshot.analytics.values(), listed))
    return result


class _Families(Collector):
    def __init__(self, metrics: Iterable[Metric]) -> None:
        self._metrics = list(metrics)

    def collect(self) -> Iterator[Metric]:
        return iter(self._metrics)

    def describe(self) -> Iterator[Metric]:
        return iter(_empty_families())


def render(snapshot: Snapshot) -> bytes:
    """The text exposition (format 0.0.4) of one snapshot's families."""
    return generate_latest(_Families(families(snapshot)))
