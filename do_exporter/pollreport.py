"""What a poll says in the log: a usage query's failure, and when the poll ends: stalls,
crashed accounts, the summary line and a budget that cannot count everything each interval
(read-only over what the poll gathered and the fold's result)."""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from .analytics import AnalyticsError
from .model import Failed, Gone, Listed
from .planner import CountPlan
from .publish import Gathered, Published

log = structlog.get_logger("do_exporter.poller")


def report(
    published: Published,
    gathered: Gathered,
    plan: CountPlan,
    budgets: Mapping[str, float | None],
    *,
    duration: float,
    requests: int,
    walks_in_flight: int,
) -> None:
    """Log what the fold found (``budgets``: credential -> budget per poll)."""
    snapshot = published.snapshot
    for account_id in published.stalled:
        log.warning(
            "counts are not progressing (rate-limit block or a hung API?)",
            account_id=account_id,
        )
    for account_id, exc in published.crashed:
        log.error(
            "publishing the account failed; it keeps its last state",
            account_id=account_id,
            exc_info=exc,
        )
    summary(
        published, gathered, duration=duration, requests=requests, walks_in_flight=walks_in_flight
    )
    for name, binds in plan.binding.items():
        if binds:
            log.warning(
                "the request budget cannot count every namespace each poll: "
                "the largest are refreshed less often",
                credential=name,
                requests_needed=plan.requests_needed.get(name, 0),
                budget_per_poll=budgets.get(name),
                full_refresh_seconds=snapshot.full_refresh_seconds,
            )


def summary(
    published: Published,
    gathered: Gathered,
    *,
    duration: float,
    requests: int,
    walks_in_flight: int,
) -> None:
    """The one line per poll: "poll finished", or "poll finished with failures"."""
    snapshot = published.snapshot
    failed_accounts = [
        a.account_id
        for a in snapshot.accounts
        if not isinstance(gathered.lists.get(a.account_id), Listed)
    ]
    failed_namespaces = [
        f"{account_id}/{ns_id}"
        for (account_id, ns_id), outcome in gathered.counts.items()
        if isinstance(outcome, Failed) and account_id in gathered.lists
    ]
    counts = [c for a in snapshot.accounts for c in a.counts.values()]
    fields: dict[str, object] = {
        "duration_seconds": round(duration, 3),
        "requests": requests,
        "accounts": len(snapshot.accounts),
        "namespaces": sum(len(a.namespaces) for a in snapshot.accounts),
        "objects": sum(c.objects for c in counts),
        "objects_with_stored_data": sum(c.with_stored_data for c in counts),
        "namespaces_gone": sum(1 for o in gathered.counts.values() if isinstance(o, Gone)),
        "walks_in_flight": walks_in_flight,
    }
    if snapshot.full_refresh_seconds is not None:
        fields["full_refresh_seconds"] = round(snapshot.full_refresh_seconds, 3)
    if failed_accounts or failed_namespaces or not snapshot.complete or published.crashed:
        log.warning(
            "poll finished with failures",
            **fields,
            failed_accounts=failed_accounts,
            failed_namespaces=failed_namespaces[:20],
            failed_namespaces_total=len(failed_namespaces),
        )
    else:
        log.info("poll finished", **fields)


def analytics_outcome(account_id: str, answer: object, *, first_denial: bool) -> None:
    """Log a usage query's failure (a permission refusal once, until it is granted)."""
    if not isinstance(answer, AnalyticsError):
        return
    if answer.permission_denied:
        if first_denial:
            log.warning(
                "usage analytics off for this account: the token lacks the permission "
                "Account Analytics: Read (asked again in an hour)",
                account_id=account_id,
            )
        return
    log.warning(
        "usage analytics query failed; the last counted values stay",
        account_id=account_id,
        error_kind=answer.kind,
        error_codes=list(answer.codes),
        error=answer.message[:300],
        status=answer.status,
    )
