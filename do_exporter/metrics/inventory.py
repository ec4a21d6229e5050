"""Inventory and poll-health families of a :class:`~do_exporter.model.Snapshot`, as parts.

Account-level families (a line per account) are one part each, keyed by their text; the
per-namespace families are one part per account, keyed by the account's namespace list (and
counts), so an account whose list and counts did not change is not written again.

Example of what it produces (one account, one namespace)::

    # HELP cloudflare_durable_objects_namespaces Durable Objects namespaces in the account.
    # TYPE cloudflare_durable_objects_namespaces gauge
    cloudflare_durable_objects_namespaces{account_id="0123..."} 1.0
    # HELP cloudflare_durable_objects_namespace_info Namespace metadata (always 1).
    # TYPE cloudflare_durable_objects_namespace_info gauge
    cloudflare_durable_objects_namespace_info{account_id="0123...",class="Counter",namespace_id="ab12...",namespace_name="counter",script="worker",use_sqlite="true"} 1.0
    # HELP cloudflare_durable_objects_objects Durable Objects in the namespace (last complete count).
    # TYPE cloudflare_durable_objects_objects gauge
    cloudflare_durable_objects_objects{account_id="0123...",namespace_id="ab12...",namespace_name="counter"} 1500.0
    ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ..model import AccountSnapshot, Snapshot
from . import contract as c
from .render import Part, Row, family_lines

Escape = Callable[[str], str]


def _bool_label(value: bool | None) -> str:
    return "" if value is None else ("true" if value else "false")


def _account_rows(snapshot: Snapshot) -> dict[c.Family, list[Row]]:
    rows: dict[c.Family, list[Row]] = {
        f: [] for f in (c.NAMESPACES, c.SQLITE_NAMESPACES, c.LAST_POLL_SUCCESS,
                        c.LAST_POLL_TIMESTAMP, c.LAST_POLL_DURATION, c.POLLS, c.FULL_REFRESH)
    }  # fmt: skip
    for account in snapshot.accounts:
        acc = (account.account_id,)
        rows[c.LAST_POLL_SUCCESS].append((acc, 1.0 if account.last_poll_success else 0.0))
        rows[c.POLLS].append(((*acc, "success"), float(account.polls_success)))
        rows[c.POLLS].append(((*acc, "failure"), float(account.polls_failure)))
        if account.last_success_at is not None:
            rows[c.LAST_POLL_TIMESTAMP].append((acc, account.last_success_at))
        if account.last_poll_duration is not None:
            rows[c.LAST_POLL_DURATION].append((acc, account.last_poll_duration))
        if account.namespaces_listed:  # never read: a 0 here would be a lie
            rows[c.NAMESPACES].append((acc, float(account.namespace_count)))
            rows[c.SQLITE_NAMESPACES].append((acc, float(account.sqlite_namespaces)))
    if snapshot.full_refresh_seconds is not None:
        rows[c.FULL_REFRESH].append(((), snapshot.full_refresh_seconds))
    return rows


def _info(account: AccountSnapshot, esc: Escape) -> str:
    acc = account.account_id
    return family_lines(
        c.NAMESPACE_INFO,
        (
            (
                (
                    acc,
                    ns.id,
                    ns.name or "",
                    ns.class_name or "",
                    ns.script or "",
                    _bool_label(ns.use_sqlite),
                ),
                1.0,
            )
            for ns in account.namespaces
        ),
        esc,
    )


def _counted(account: AccountSnapshot, family: c.Family, esc: Escape) -> str:
    acc, counts = account.account_id, account.counts
    rows: list[Row] = []
    for ns in account.namespaces:
        count = counts.get(ns.id)
        if count is None:
            continue  # not counted yet: no value rather than a wrong one
        if family is c.OBJECTS:
            rows.append(((acc, ns.id, ns.name or ""), float(count.objects)))
        elif family is c.OBJECTS_WITH_STORED_DATA:
            rows.append(((acc, ns.id, ns.name or ""), float(count.with_stored_data)))
        else:
            rows.append(((acc, ns.id), count.completed_at))
    return family_lines(family, rows, esc)


def parts(snapshot: Snapshot, esc: Escape) -> Iterator[Part]:
    """The inventory parts of ``snapshot`` (families: :data:`contract.INVENTORY_FAMILIES`)."""
    for family, rows in _account_rows(snapshot).items():
        body = family_lines(family, rows, esc)
        yield Part(family, "", body, lambda body=body: body)  # type: ignore[misc]
    for account in snapshot.accounts:
        if not account.namespaces_listed:
            continue
        acc, listed = account.account_id, account.namespaces
        yield Part(c.NAMESPACE_INFO, acc, listed, lambda a=account: _info(a, esc))  # type: ignore[misc]
        key = (listed, account.counts)
        for family in (c.OBJECTS, c.OBJECTS_WITH_STORED_DATA, c.NAMESPACE_LAST_SUCCESS):
            yield Part(family, acc, key, lambda a=account, f=family: _counted(a, f, esc))  # type: ignore[misc]
