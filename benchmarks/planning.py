"""Planning cost per account: the planner called the way a poll calls it.

    python benchmarks/planning.py [--smoke] [--runs N] [--json FILE]

One poll's decisions, in-process, no thread and no socket: ``poll_start`` (which accounts
are listed, which credentials discover), a ``CountPlan``, for every account its list's
``counts_due`` and every due namespace's ``order``, then ``publish`` with a count for every
namespace. Accounts of 2 namespaces each, 5,000 / 10,000 / 20,000 of them, one credential
either configured with every account id or discovering them (``GET /accounts`` answering
all of them in the poll). Each shape runs ``--runs`` polls; the per-account cost (from the
fastest run, the least disturbed by other load on a shared machine; the median is shown
too) must stay constant (linear planning) within 1.5x from the smallest to the largest.

It runs against the tree it is imported from, so the same file measures an older checkout
(``PYTHONPATH=/path/to/checkout python benchmarks/planning.py``): before the one-way poll
(round 3), ``publish`` took the finished walks in an ``InFlight``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any

sys.path.append(str(Path(__file__).resolve().parent.parent))  # last: PYTHONPATH wins

from do_exporter import planner
from do_exporter.model import AccountSnapshot, Namespace, NamespaceCount, ObjectCount, Snapshot

ONE_WAY = not hasattr(planner, "Gathered")  # round 3: publish moved to publish.py
SHAPES = (5_000, 10_000, 20_000)
NAMESPACES_PER_ACCOUNT = 2


def account_id(index: int) -> str:
    return f"{index + 1:032x}"


def shape(accounts: int) -> tuple[Snapshot, dict[str, tuple[Namespace, ...]]]:
    """The previous snapshot (every account listed and counted) and each account's list."""
    lists: dict[str, tuple[Namespace, ...]] = {}
    snaps = []
    for a in range(accounts):
        acc = account_id(a)
        nss = tuple(Namespace(f"{a:08x}{i:024x}", f"ns{i}") for i in range(NAMESPACES_PER_ACCOUNT))
        lists[acc] = nss
        counts = {n.id: NamespaceCount(i * 7_000, i, 100.0) for i, n in enumerate(nss)}
        snaps.append(
            AccountSnapshot(
                account_id=acc,
                namespaces=nss,
                counts=MappingProxyType(counts),
                namespaces_listed=True,
                polls_success=1,
                last_poll_success=True,
            )
        )
    return Snapshot(accounts=tuple(snaps), generation=1), lists


def one_poll(
    previous: Snapshot, lists: dict[str, tuple[Namespace, ...]], discover: bool
) -> Snapshot:
    """The planner's work for one poll, in the order the poller does it."""
    ids = tuple(lists)
    cred = planner.Credential(
        "default", () if discover else ids, budget_per_poll=1e9, window_polls=5.0
    )
    creds = [cred]
    inflight = planner.InFlight()
    start = planner.poll_start(previous, creds, inflight, {})
    plan = planner.CountPlan(previous, creds)
    owners = dict(start.owners)
    to_list = list(start.lists)
    discovered: dict[str, tuple[str, ...]] = {}
    if discover:  # the discovery answer comes back during the poll
        discovered["default"] = ids
        new = [a for a in ids if a not in owners]
        for acc in new:
            owners[acc] = "default"
        to_list += [(acc, "default") for acc in new]
    listed: dict[str, Any] = {}
    due: dict[str, frozenset[str]] = {}
    counts: dict[tuple[str, str], Any] = {}
    nothing: dict[tuple[str, str], Any] = {}
    for acc, owner in to_list:
        namespaces = lists[acc]
        starting = planner.counts_due(acc, namespaces, nothing, nothing)
        due[acc] = frozenset(ns.id for ns in starting)
        for ns in starting:
            plan.order(owner, (acc, ns.id))
            counts[(acc, ns.id)] = ObjectCount(5, 1, 1, completed_at=200.0)
        listed[acc] = namespaces
    common = dict(
        started_at=190.0,
        owners=owners,
        discovered=discovered,
        listed_at={},
        due=due,
        finished_at=200.0,
    )
    if ONE_WAY:
        from do_exporter.model import Counted, Listed
        from do_exporter.publish import Gathered, publish

        gathered = Gathered(
            **common,  # type: ignore[arg-type]
            lists={acc: Listed(nss) for acc, nss in listed.items()},
            counts={key: Counted(c) for key, c in counts.items()},
        )
        return publish(previous, creds, gathered, stall_seconds=600).snapshot
    gathered = planner.Gathered(**common, lists=listed)  # type: ignore[attr-defined]
    done = planner.InFlight(finished=counts)  # type: ignore[call-arg]
    return planner.publish(previous, creds, gathered, done, stall_seconds=600).snapshot  # type: ignore[attr-defined]


def run(smoke: bool, runs: int) -> list[dict[str, Any]]:
    rows = []
    for discover in (False, True):
        for accounts in (500, 1_000, 2_000) if smoke else SHAPES:
            previous, lists = shape(accounts)
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                snap = one_poll(previous, lists, discover)
                times.append(time.perf_counter() - started)
            assert len(snap.accounts) == accounts and all(
                a.last_poll_success for a in snap.accounts
            )
            median, best = statistics.median(times), min(times)
            rows.append(
                {
                    "mode": "discovered" if discover else "configured",
                    "accounts": accounts,
                    "namespaces": accounts * NAMESPACES_PER_ACCOUNT,
                    "runs": runs,
                    "median_s": round(median, 4),
                    "min_s": round(best, 4),
                    # per account from the fastest run: the least disturbed by other load
                    "us_per_account": round(best / accounts * 1e6, 1),
                }
            )
    for mode in ("configured", "discovered"):
        per = [r["us_per_account"] for r in rows if r["mode"] == mode]
        rows.append({"mode": mode, "per_account_ratio": round(max(per) / min(per), 2)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    print(json.dumps({"tree": str(Path(planner.__file__).parent.parent)}))
    rows = run(args.smoke, args.runs)
    for row in rows:
        print(json.dumps(row))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
