"""docs/metrics.md holds the contract's table and the series each group costs, exactly."""

from __future__ import annotations

import re
from pathlib import Path

from do_exporter.metrics import contract
from do_exporter.metrics.groups import GROUPS

DOC = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"


def family_table() -> str:
    rows = ["| metric | type | labels | group | meaning |", "| --- | --- | --- | --- | --- |"]
    for f in contract.FAMILIES:
        labels = ", ".join(f"`{label}`" for label in f.labels) or "none"
        rows.append(f"| `{f.name}` | {f.type} | {labels} | {f.group or '(own)'} | {f.meaning} |")
    return "\n".join(rows)


def cost_table() -> str:
    rows = [
        "| group | series per namespace | per account | families |",
        "| --- | --- | --- | --- |",
    ]
    for group in GROUPS:
        fams = [f for f in contract.FAMILIES if f.group == group]
        per_account = sum(f.per for f in fams if f.scope == contract.ACCOUNT)
        top = sum(f.per for f in fams if f.scope == contract.TOP)
        account = f"{per_account}" + (f" + {top} x top-objects" if top else "")
        names = ", ".join(f"`{f.name.removeprefix(contract.PREFIX + '_')}`" for f in fams)
        rows.append(f"| {group} | {contract.series_per_namespace(group)} | {account} | {names} |")
    return "\n".join(rows)


def _section(text: str, name: str) -> str:
    m = re.search(rf"<!-- {name}:begin -->\n(.*?)\n<!-- {name}:end -->", text, re.S)
    assert m is not None, f"docs/metrics.md has no {name} section"
    return m.group(1)


def test_the_family_table_is_the_contract() -> None:
    """Every family of the contract, with its type, labels, group and meaning (regenerate
    from the message when the contract changes)."""
    expected = family_table()
    assert _section(DOC.read_text(), "families") == expected, "\n" + expected


def test_the_cost_table_is_the_contract() -> None:
    expected = cost_table()
    assert _section(DOC.read_text(), "costs") == expected, "\n" + expected


def test_estimate_counts_each_group() -> None:
    """The start-up estimate: namespace families scale with namespaces, hot objects with
    accounts and N, a group turned off costs nothing, the own families stay."""
    full = contract.estimate_series(accounts=2, namespaces=100, top_objects=10)
    assert full["inventory"] == 100 * contract.series_per_namespace("inventory") + 2 * 2
    assert full["hot_objects"] == 2 * 2 * 10
    assert full["latency"] == 100 * 7
    off = contract.estimate_series(accounts=2, namespaces=100, enabled=set(GROUPS) - {"latency"})
    assert "latency" not in off and off["exporter"] == full["exporter"]
    plain = contract.estimate_series(accounts=2, namespaces=100, analytics=False)
    assert set(plain) == {"inventory", "exporter"}
