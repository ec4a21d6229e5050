"""Usage analytics families as parts: the analytics module's rows, one account at a time.

``analytics.family_rows(state, namespaces)`` yields an account's families in the contract's
:data:`~.contract.ANALYTICS_FAMILIES` order, each with its rows (:data:`~.render.Row`, labels
in the family's order; the summary's rows as :func:`~.render.summary_lines` takes them),
made lazily: one family's text exists at a time, and an account whose analytics state and
namespace list are the same objects as at the last render is not written again.

Without ``family_rows`` (an older analytics module) ``analytics.families`` builds
prometheus-client objects, written here the way ``generate_latest`` does; families are then
looked up in the contract by name, one the contract does not know keeps its help and type.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only the fallback path handles prometheus-client objects
    from prometheus_client.metrics_core import Metric

from .. import analytics
from ..model import Namespace, Snapshot
from . import contract as c
from .render import Part, lines, number, summary_lines

Escape = Callable[[str], str]
_OPENMETRICS_ONLY = ("_created", "_gsum", "_gcount")


def exposed_name(metric: Metric) -> tuple[str, str]:
    """The name and type ``generate_latest`` writes in ``# TYPE`` for ``metric``."""
    if metric.type == "counter":
        return metric.name + "_total", "counter"
    if metric.type == "info":
        return metric.name + "_info", "gauge"
    kinds = {"stateset": "gauge", "gaugehistogram": "histogram", "unknown": "untyped"}
    return metric.name, kinds.get(metric.type, metric.type)


def contract_family(metric: Metric) -> c.Family:
    name, kind = exposed_name(metric)
    known = c.BY_NAME.get(name)
    if known is not None:
        return known
    return c.Family(name, metric.documentation, kind, (), None, metric.documentation, c.PROCESS)


def metric_lines(metric: Metric, esc: Escape) -> str:
    """A prometheus-client family's sample lines, as ``generate_latest`` writes them."""
    skip = {metric.name + suffix for suffix in _OPENMETRICS_ONLY}
    templates: dict[tuple[str, tuple[str, ...]], tuple[str, list[str]]] = {}
    out = []
    for s in metric.samples:
        labels = s.labels
        if s.name in skip:
            continue
        if not labels:
            out.append(f"{s.name} {number(s.value)}\n")
            continue
        shape = (s.name, tuple(labels))
        found = templates.get(shape)
        if found is None:
            order = sorted(labels)
            pairs = ",".join(f'{k}="%s"' for k in order)
            found = templates[shape] = (f"{s.name}{{{pairs}}} %s\n", order)
        template, order = found
        out.append(template % (*[esc(labels[k]) for k in order], number(s.value)))
    return "".join(out)


def families() -> list[c.Family]:
    """The analytics families, in the order the analytics module builds them."""
    if hasattr(analytics, "family_rows"):
        return list(c.ANALYTICS_FAMILIES)
    return [contract_family(m) for m in analytics.families([], {})]


class _Account:
    """One account's analytics text, family by family as the renderer asks for it (in
    contract order): only one family's text exists at a time."""

    def __init__(self, state: analytics.AnalyticsState, listed: Sequence[Namespace],
                 esc: Escape) -> None:  # fmt: skip
        self.state, self.listed, self.esc = state, listed, esc
        self._rows: Iterator[tuple[c.Family, Iterable[Any]]] | None = None
        self._texts: dict[str, str] | None = None

    def text(self, name: str) -> str:
        rows = getattr(analytics, "family_rows", None)
        if rows is None:
            return self._built(name)
        if self._rows is None:
            self._rows = iter(rows(self.state, self.listed))
        for family, found in self._rows:  # families before ``name`` were not asked for
            if family.name == name:
                if family.type == "summary":
                    return summary_lines(family.name, family.labels, found, self.esc)
                return lines(family.name, family.labels, found, self.esc)
        return ""

    def _built(self, name: str) -> str:
        if self._texts is None:
            built = analytics.families([self.state], {self.state.account_id: self.listed})
            texts = {}
            while built:  # each family's objects go as soon as it is written
                metric = built.pop(0)
                texts[exposed_name(metric)[0]] = metric_lines(metric, self.esc)
                del metric
            self._texts = texts
        return self._texts.pop(name, "")  # written once, then dropped


def parts(snapshot: Snapshot, present: Sequence[c.Family], esc: Escape) -> Iterator[Part]:
    """Each account's analytics parts (none when analytics are off)."""
    listed = {a.account_id: a.namespaces for a in snapshot.accounts if a.namespaces_listed}
    for acc, state in snapshot.analytics.items():
        namespaces = listed.get(acc, ())
        account = _Account(state, namespaces, esc)
        key = (state, namespaces)
        for family in present:
            yield Part(family, acc, key, lambda f=family, a=account: a.text(f.name))  # type: ignore[misc]
