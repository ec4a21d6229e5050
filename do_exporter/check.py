"""``do-exporter --check``: verify each credential's token and try each capability once.

The shell (:func:`check_credential`, :func:`run_check`) makes the requests: verify the token,
find the accounts (given, or ``GET /accounts``), then per account the cheapest request of
each capability: one ``per_page=1`` namespace page (Workers Scripts Read), one 10-object
page (the same permission, on objects), and one 1-minute analytics query (Account Analytics
Read). Everything that decides what to print or which exit status is pure and takes a
:class:`CredentialReport` (:func:`render`, :func:`poll_plan`, :func:`problems`).

Example (one credential, a token without Account Analytics Read)::

    credential default
      token    active, user-owned, never expires
      ACCOUNT                           CHECK       RESULT
      0123456789abcdef0123456789abcdef  namespaces  ok: 2 namespaces
      0123456789abcdef0123456789abcdef  objects     ok
      0123456789abcdef0123456789abcdef  analytics   MISSING permission "Account Analytics: Read"
      budget   1197 requests left in Cloudflare's current window (Ratelimit header)
      plan     at least 3 requests per poll (...) of 1000 allowed per 300 s interval: fits
    1 problem
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TextIO

import requests

from .analytics import AnalyticsError, Window, as_usage, build_request, decode_answer, floor_minute
from .apifacts import PER_SECOND_LIMIT, RATE_LIMIT_WINDOW
from .cloudflare import (
    ACCOUNT_OWNED,
    ACCOUNTS_PER_PAGE,
    INVALID_TOKEN,
    NAMESPACES_PER_PAGE,
    OBJECTS_PER_PAGE,
    CloudflareAPIError,
    CloudflareClient,
    NamespaceProbe,
    RetryPolicy,
    TokenStatus,
)
from .config import DEFAULT_CREDENTIAL, Config, Credential, Secret
from .options import DEFAULT_ANALYTICS_DELAY
from .ratelimit import RateLimiter
from .tokenhealth import EXPIRY_WARNING, when

# The words of Cloudflare's token UI ("Account | Workers Scripts | Read").
WORKERS_READ = "Workers Scripts: Read"
ANALYTICS_READ = "Account Analytics: Read"
NAMESPACES, OBJECTS, ANALYTICS = "namespaces", "objects", "analytics"
OK, MISSING, FAILED, SKIPPED = "ok", "MISSING", "FAILED", "not checked"
# Seconds of analytics still incomplete at Cloudflare (the query asks an older minute).
ANALYTICS_DELAY = DEFAULT_ANALYTICS_DELAY
ACCOUNT_WORKERS = 8  # accounts checked at once per credential
CHECK_RETRY = RetryPolicy(attempts=2, base=0.5, max_backoff=2.0, max_retry_after=10.0)


@dataclass(frozen=True, slots=True)
class Result:
    """One line of the table: a capability on an account, and what happened."""

    account_id: str
    check: str
    outcome: str  # OK, MISSING, FAILED or SKIPPED
    detail: str = ""


@dataclass(frozen=True, slots=True)
class CredentialReport:
    """Everything ``--check`` learnt about one credential (never its token)."""

    name: str
    token: TokenStatus | None = None
    token_error: str | None = None  # verification failed (no verdict)
    accounts_error: str | None = None  # discovery failed, or found nothing
    discovered: bool = False  # accounts came from GET /accounts
    results: tuple[Result, ...] = ()
    namespaces: dict[str, int | None] = field(default_factory=dict)  # by account
    ratelimit_remaining: int | None = None
    api_rate_limit: int = 1000
    api_reserve: int = 0


@dataclass(frozen=True, slots=True)
class PollPlan:
    """Requests a poll needs at least, against what the budget allows per interval."""

    requests: int | None  # None: some account's namespace count is unknown
    account_lists: int
    namespace_lists: int
    namespaces: int
    allowed: float

    @property
    def fits(self) -> bool | None:
        return None if self.requests is None else self.requests <= self.allowed


# ---- pure --------------------------------------------------------------------------------


def describe_error(error: CloudflareAPIError) -> tuple[str, str]:
    """(outcome, detail) for a failed Workers Scripts request, in the token UI's words."""
    if error.kind == "api" and error.status == 403 and 10000 in error.codes:
        return MISSING, (
            f'permission "{WORKERS_READ}" (or the token does not include this account)'
        )
    if 7403 in error.codes:
        return FAILED, "the account does not exist or this token cannot reach it (code 7403)"
    return FAILED, str(error)


def describe_analytics(answer: AnalyticsError) -> tuple[str, str]:
    if answer.permission_denied:
        return MISSING, f'permission "{ANALYTICS_READ}"'
    codes = ", ".join(answer.codes) or answer.kind
    return FAILED, f"GraphQL: {answer.message} ({codes}): {'; '.join(answer.messages)[:200]}"


def token_line(report: CredentialReport, now: float) -> str:
    token = report.token
    if token is None:
        return f"could not verify: {report.token_error}"
    if token.status == INVALID_TOKEN:
        return (
            "INVALID: Cloudflare does not know this token (revoked or mistyped; an "
            "account-owned token is found only with its account id: --account-id)"
        )
    owner = "account-owned" if token.owner == ACCOUNT_OWNED else "user-owned"
    status = token.status if token.status == "active" else token.status.upper()
    parts = [status, owner]
    if token.expires_at is None:
        parts.append("never expires")
    else:
        days = (token.expires_at - now) / 86_400
        verb = "expires" if days > 0 else "expired"
        soon = " - SOON, roll it" if 0 < days * 86_400 < EXPIRY_WARNING else ""
        parts.append(f"{verb} {when(token.expires_at)} ({abs(days):.1f} days{soon})")
    if token.not_before is not None and token.not_before > now:
        parts.append(f"NOT VALID BEFORE {when(token.not_before)}")
    return ", ".join(parts)


def poll_plan(report: CredentialReport, interval: float) -> PollPlan:
    """What one poll costs at least: the account list (when discovering), the namespace
    lists, and one objects page per namespace (ceil(objects / 10,000) each, which only a
    full walk could tell)."""
    counts = list(report.namespaces.values())
    account_lists = math.ceil(len(counts) / ACCOUNTS_PER_PAGE) if report.discovered else 0
    known = [c for c in counts if c is not None]
    namespace_lists = sum(max(1, math.ceil(c / NAMESPACES_PER_PAGE)) for c in known)
    total = sum(known)
    requests_ = None if len(known) < len(counts) else account_lists + namespace_lists + total
    allowed = report.api_rate_limit * interval / RATE_LIMIT_WINDOW
    return PollPlan(requests_, account_lists, namespace_lists, total, allowed)


def problems(report: CredentialReport, now: float) -> list[str]:
    """What does not work: each makes ``--check`` exit 1."""
    out: list[str] = []
    token = report.token
    if token is None:
        out.append("token could not be verified")
    elif token.status != "active":
        out.append(f"token {token.status}")
    elif token.not_before is not None and token.not_before > now:
        out.append("token not valid yet")
    if report.accounts_error is not None:
        out.append("accounts")
    out.extend(
        f"{r.account_id} {r.check}" for r in report.results if r.outcome in (MISSING, FAILED)
    )
    return out


def render(report: CredentialReport, *, interval: float, now: float) -> str:
    """The plain-text block of one credential."""
    lines = [f"credential {report.name}", f"  token    {token_line(report, now)}"]
    if report.accounts_error is not None:
        lines.append(f"  accounts FAILED: {report.accounts_error}")
    if report.results:
        rows = [("ACCOUNT", "CHECK", "RESULT")] + [
            (r.account_id, r.check, f"{r.outcome}{': ' if r.detail else ''}{r.detail}")
            for r in report.results
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(2)]
        for a, c, res in rows:
            lines.append(f"  {a:<{widths[0]}}  {c:<{widths[1]}}  {res}".rstrip())
    remaining = report.ratelimit_remaining
    if remaining is None:
        lines.append("  budget   not reported (no Ratelimit header in the answers)")
    else:
        note = ""
        if remaining <= report.api_reserve:
            note = (
                f"; at or below the reserve of {report.api_reserve}: the exporter would wait "
                "for the window to reset"
            )
        lines.append(
            f"  budget   {remaining} requests left in Cloudflare's current window "
            f"(Ratelimit header){note}"
        )
    if report.namespaces:
        plan = poll_plan(report, interval)
        allowed = f"{plan.allowed:g} allowed per {interval:g} s interval"
        if plan.requests is None:
            lines.append(f"  plan     unknown (a namespace list failed); {allowed}")
        else:
            verdict = "fits" if plan.fits else "DOES NOT FIT: polls will run late"
            lines.append(
                f"  plan     at least {plan.requests} requests per poll, {allowed}: {verdict}"
            )
            lines.append(
                f"           ({plan.account_lists} account list + {plan.namespace_lists} namespace "
                f"list + 1 objects page per namespace x {plan.namespaces};"
            )
            lines.append(f"           a namespace costs 1 more per {OBJECTS_PER_PAGE:,} objects)")
    return "\n".join(lines)


def _plural(n: int | str, word: str) -> str:
    return f"{n} {word}" if n in (1, "1") else f"{n} {word}s"


def exit_status(reports: Sequence[CredentialReport], now: float) -> int:
    return 1 if any(problems(r, now) for r in reports) else 0


# ---- the requests ------------------------------------------------------------------------


class _BudgetObserver:
    """Keeps the last ``Ratelimit`` remaining count the client saw (a RequestObserver)."""

    def __init__(self) -> None:
        self.remaining: int | None = None
        self._lock = threading.Lock()

    def request_finished(self, endpoint: str, code: str, seconds: float) -> None:
        pass

    def api_error(self, endpoint: str, error_code: str) -> None:
        pass

    def label_truncated(self) -> None:
        pass

    def ratelimit_remaining(self, remaining: int) -> None:
        with self._lock:
            self.remaining = remaining

    def get(self) -> int | None:
        with self._lock:
            return self.remaining


def check_account(
    client: CloudflareClient,
    account_id: str,
    *,
    objects: bool = True,
    analytics: bool = True,
    now: float,
) -> tuple[list[Result], int | None]:
    """The capability lines of one account, and its namespace count (None: unknown)."""
    out: list[Result] = []
    probe: NamespaceProbe | None = None
    total: int | None = None
    try:
        probe = client.probe_namespaces(account_id)
    except CloudflareAPIError as exc:
        out.append(Result(account_id, NAMESPACES, *describe_error(exc)))
    else:
        total = probe.total
        shown = "?" if total is None else str(total)
        out.append(Result(account_id, NAMESPACES, OK, _plural(shown, "namespace")))
    if objects:
        if probe is None:
            out.append(Result(account_id, OBJECTS, SKIPPED, f"needs {WORKERS_READ}"))
        elif probe.first is None:
            out.append(Result(account_id, OBJECTS, SKIPPED, "no namespace to read"))
        else:
            try:
                client.probe_objects(account_id, probe.first.id)
            except CloudflareAPIError as exc:
                out.append(Result(account_id, OBJECTS, *describe_error(exc)))
            else:
                out.append(Result(account_id, OBJECTS, OK))
    if analytics:
        end = floor_minute(now - ANALYTICS_DELAY)
        body = build_request(account_id, Window(end - 60, end), page_size=1, groups=())
        try:
            graphql = client.graphql(account_id, body)
            answer = as_usage(decode_answer(graphql.document, status=graphql.status), page_size=1)
        except CloudflareAPIError as exc:
            out.append(Result(account_id, ANALYTICS, FAILED, str(exc)))
        else:
            if isinstance(answer, AnalyticsError):
                out.append(Result(account_id, ANALYTICS, *describe_analytics(answer)))
            else:
                out.append(Result(account_id, ANALYTICS, OK))
    return out, total


def check_credential(
    client: CloudflareClient,
    name: str,
    account_ids: Sequence[str],
    *,
    objects: bool = True,
    analytics: bool = True,
    remaining: Callable[[], int | None] = lambda: None,
    clock: Callable[[], float] = time.time,
    api_rate_limit: int = 1000,
    api_reserve: int = 0,
) -> CredentialReport:
    """Verify the token, find the accounts, try each capability per account."""
    token: TokenStatus | None = None
    token_error = None
    try:
        token = client.verify_token(account_ids)
    except CloudflareAPIError as exc:
        token_error = str(exc)
    base = CredentialReport(
        name, token, token_error, api_rate_limit=api_rate_limit, api_reserve=api_reserve
    )
    if token is not None and token.status != "active":
        return replace(base, ratelimit_remaining=remaining())  # nothing else can work
    accounts = list(account_ids)
    discovered = not accounts
    accounts_error = None
    if discovered:
        try:
            accounts = [a.id for a in client.list_accounts()]
        except CloudflareAPIError as exc:
            accounts_error = str(exc)
            if 1001 in exc.codes:
                accounts_error = (
                    "account-owned tokens cannot list accounts: give the account ids "
                    "(--account-id, or accounts: in --config.file)"
                )
        else:
            if not accounts:
                accounts_error = "the token reads no account (GET /accounts is empty)"
    now = clock()
    with ThreadPoolExecutor(max_workers=ACCOUNT_WORKERS) as pool:
        done = list(
            pool.map(
                lambda a: check_account(client, a, objects=objects, analytics=analytics, now=now),
                accounts,
            )
        )
    results = tuple(line for lines, _ in done for line in lines)
    namespaces = {a: total for a, (_, total) in zip(accounts, done, strict=True)}
    return replace(
        base,
        accounts_error=accounts_error,
        discovered=discovered,
        results=results,
        namespaces=namespaces,
        ratelimit_remaining=remaining(),
    )


def run_check(
    config: Config,
    out: TextIO,
    *,
    credentials: Sequence[Credential] | None = None,
    api_url: str | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    """Check every credential (``credentials``, default the config's), print one block
    each to ``out`` and return the exit status: 0 all works, 1 something is missing."""
    creds = list(config.credentials if credentials is None else credentials)
    # Config.analytics arrives with the analytics wiring; until then analytics count as on.
    analytics = bool(config.analytics)
    reports: list[CredentialReport] = []
    with requests.Session() as session:
        for credential in creds:
            observer = _BudgetObserver()
            client = CloudflareClient(
                session,
                api_url or config.api_url,
                credential.token,
                limiter=RateLimiter(
                    credential.api_rate_limit, RATE_LIMIT_WINDOW, per_second=PER_SECOND_LIMIT
                ),
                timeout=config.api_timeout,
                retry=CHECK_RETRY,
                observer=observer,
            )
            report = check_credential(
                client,
                credential.name,
                credential.account_ids,
                analytics=analytics,
                remaining=observer.get,
                clock=clock,
                api_rate_limit=credential.api_rate_limit,
                api_reserve=credential.api_reserve,
            )
            reports.append(report)
            print(render(report, interval=config.interval, now=clock()), file=out, flush=True)
    now = clock()
    found = [p for r in reports for p in problems(r, now)]
    verdict = "everything works" if not found else _plural(len(found), "problem")
    print(f"{verdict}: exit {exit_status(reports, now)}", file=out, flush=True)
    return exit_status(reports, now)


def demo_credential(token: str) -> Credential:
    """The credential ``--check --demo`` checks: the built-in simulator's token."""
    return Credential(DEFAULT_CREDENTIAL, token=Secret(token))
