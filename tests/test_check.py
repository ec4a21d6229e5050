"""``do-exporter --check`` as a user runs it, against the simulator over real HTTP.

Every permission combination, disabled and expired tokens, account-owned tokens, several
credentials, bad configuration; and in every run the token appears in no output. The
command runs in this process (``cli.main``, see tests/support.run_cli) where the test is
about its table and exit status; one run per exit status (0, 1, 2) is a real process.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from do_exporter.check import (
    MISSING,
    OK,
    SKIPPED,
    CredentialReport,
    Result,
    exit_status,
    poll_plan,
    render,
)
from do_exporter.cloudflare import TokenStatus
from do_exporter.simulator import Scenario, Simulator
from tests.conftest import ACCOUNT_A, ACCOUNT_B, ns
from tests.support import SAFETY_TIMEOUT, CliRun, run_cli
from tests.test_cli import clean_env

MakeSim = Callable[..., Simulator]


def _token(name: str) -> str:
    """A 40-character token (the CLI refuses shorter ones)."""
    return (name + "-" + "0123456789abcdefghijklmnopqrstuvwxyzABCD")[:40]


BOTH = _token("both")
WORKERS = _token("workers")
ANALYTICS = _token("analytics")
NOTHING = _token("nothing")
MIXED = _token("mixed")
DISABLED = _token("disabled")
EXPIRED = _token("expired")
OWNED = _token("owned")
SOON = _token("soon")
ALL_TOKENS = (BOTH, WORKERS, ANALYTICS, NOTHING, MIXED, DISABLED, EXPIRED, OWNED, SOON)
WR, AR = "workers_scripts_read", "account_analytics_read"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    scn = Scenario.from_dict(
        {
            "seed": 11,
            "tokens": [
                {"value": BOTH, "permissions": [WR, AR], "expires_on": "2031-01-01T00:00:00Z"},
                {"value": WORKERS, "permissions": [WR]},
                {"value": ANALYTICS, "permissions": [AR]},
                {"value": NOTHING, "permissions": []},
                {"value": MIXED, "permissions": {ACCOUNT_A: [WR, AR], "*": [AR]}},
                {"value": DISABLED, "status": "disabled"},
                {"value": EXPIRED, "expires_on": "2024-01-01T00:00:00Z"},
                {"value": OWNED, "owner": "account", "accounts": [ACCOUNT_B]},
                {"value": SOON, "expires_on": _iso(time.time() + 5 * 86_400)},
            ],
            "accounts": [
                {"id": ACCOUNT_A, "namespaces": [ns(1, 25_000), ns(2, 40)]},
                {"id": ACCOUNT_B, "namespaces": [ns(3, 7)]},
            ],
        }
    )
    with Simulator(scn, host="127.0.0.1", port=0) as server:
        yield server


def check(
    sim: Simulator, token: str | None, *args: str, process: bool = False, **env: str
) -> subprocess.CompletedProcess[str] | CliRun:
    """Run ``--check`` (in this process unless ``process``); assert that no token of the
    scenario shows in any output."""
    if token is not None:
        env["CLOUDFLARE_API_TOKEN"] = token
    argv = ["--check", "--api-url", sim.api_url, *args]
    run: subprocess.CompletedProcess[str] | CliRun
    if process:
        run = subprocess.run(
            [sys.executable, "-m", "do_exporter", *argv],
            capture_output=True,
            text=True,
            timeout=SAFETY_TIMEOUT,
            env=clean_env(**env),
        )
    else:
        run = run_cli(argv, clean_env(**env))
    for secret in ALL_TOKENS:
        assert secret not in run.stdout and secret not in run.stderr
        assert secret[:20] not in run.stdout + run.stderr
    return run


def rows(stdout: str) -> dict[tuple[str, str], str]:
    """(account, check) -> outcome, from the table."""
    found = re.findall(r"^  ([0-9a-f]{32})  (\w+)\s+(ok|MISSING|FAILED|not checked)", stdout, re.M)
    return {(a, c): outcome for a, c, outcome in found}


def _expect(a: tuple[str, str, str], b: tuple[str, str, str]) -> dict[tuple[str, str], str]:
    out = {}
    for account, outcomes in ((ACCOUNT_A, a), (ACCOUNT_B, b)):
        for capability, outcome in zip(
            ("namespaces", "objects", "analytics"), outcomes, strict=True
        ):
            out[(account, capability)] = outcome
    return out


@pytest.mark.parametrize(
    ("token", "expected", "status"),
    [
        (BOTH, _expect((OK, OK, OK), (OK, OK, OK)), 0),
        (WORKERS, _expect((OK, OK, MISSING), (OK, OK, MISSING)), 1),
        (ANALYTICS, _expect((MISSING, SKIPPED, OK), (MISSING, SKIPPED, OK)), 1),
        (NOTHING, _expect((MISSING, SKIPPED, MISSING), (MISSING, SKIPPED, MISSING)), 1),
        (MIXED, _expect((OK, OK, OK), (MISSING, SKIPPED, OK)), 1),
    ],
    ids=["both", "workers-only", "analytics-only", "nothing", "per-account"],
)
def test_permission_combinations(
    sim: Simulator, token: str, expected: dict[tuple[str, str], str], status: int
) -> None:
    """One line per account and capability; what is missing in the token UI's words."""
    run = check(sim, token)
    assert run.returncode == status, run.stdout + run.stderr
    assert rows(run.stdout) == expected
    if MISSING in expected.values():
        wanted = {c for (_, c), o in expected.items() if o == MISSING}
        words = {"namespaces": "Workers Scripts: Read", "analytics": "Account Analytics: Read"}
        for capability in wanted:
            assert f'permission "{words[capability]}"' in run.stdout
        assert re.search(r"^\d+ problems?: exit 1$", run.stdout, re.M)
    else:
        assert run.stdout.rstrip().endswith("everything works: exit 0")
    assert "active, user-owned" in run.stdout
    assert run.stderr == ""  # logs are for errors only, unless asked for


def test_budget_and_poll_plan(sim: Simulator) -> None:
    """The Ratelimit header's remaining count and the poll plan it implies."""
    run = check(sim, BOTH, "--api-rate-limit", "600", "--interval", "10")
    assert re.search(r"budget   \d+ requests left in Cloudflare's current window", run.stdout)
    # 1 account list + 2 namespace lists + 3 namespaces; 600 x 10 / 300 = 20 per poll.
    assert "at least 6 requests per poll, 20 allowed per 10 s interval: fits" in run.stdout
    assert "expires 2031-01-01T00:00:00Z" in run.stdout
    tight = check(sim, BOTH, "--api-rate-limit", "100", "--interval", "10")
    assert "DOES NOT FIT" in tight.stdout and tight.returncode == 0


@pytest.mark.parametrize(("token", "word"), [(DISABLED, "DISABLED"), (EXPIRED, "EXPIRED")])
def test_disabled_and_expired_tokens(sim: Simulator, token: str, word: str) -> None:
    """A token that is not active is the one problem: no account is tried."""
    run = check(sim, token)
    assert run.returncode == 1
    assert re.search(rf"^  token    {word}, user-owned", run.stdout, re.M)
    assert rows(run.stdout) == {}


def test_expiring_soon_is_said_but_works(sim: Simulator) -> None:
    """Five days left: flagged on the token line; everything works, exit 0."""
    run = check(sim, SOON)
    assert run.returncode == 0
    assert re.search(r"expires \S+ \(\d\.\d days - SOON, roll it\)", run.stdout)


def test_account_owned_token(sim: Simulator) -> None:
    """The user endpoint answers 1000; with its account id the account endpoint knows it."""
    run = check(sim, OWNED, "--account-id", ACCOUNT_B)
    assert run.returncode == 0, run.stdout
    assert "active, account-owned" in run.stdout
    assert set(rows(run.stdout).values()) == {OK}
    # Without an account id nothing can find it: the message says what to do.
    lost = check(sim, OWNED)
    assert lost.returncode == 1
    assert "INVALID" in lost.stdout and "--account-id" in lost.stdout


def test_unknown_token_and_debug_logs(sim: Simulator) -> None:
    """A token Cloudflare does not know, with debug logs: exit 1, and still never shown."""
    stranger = _token("stranger")
    run = check(sim, stranger, "--log-level", "debug", process=True)
    assert run.returncode == 1
    assert "INVALID" in run.stdout
    assert stranger not in run.stdout + run.stderr
    assert "verify" in run.stderr  # the debug/warning log lines are there, without the token


def test_failing_api_is_failed_not_missing(sim: Simulator) -> None:
    """A 500 on the namespace list is FAILED (with Cloudflare's answer), not a permission."""
    sim.inject("status", endpoint="namespaces", status=500, count=2)
    try:
        run = check(sim, BOTH, "--account-id", ACCOUNT_A, "--log-level", "debug")
    finally:
        sim.clear_faults()
    assert run.returncode == 1
    assert rows(run.stdout)[(ACCOUNT_A, "namespaces")] == "FAILED"
    assert "HTTP 500" in run.stdout


def test_one_block_per_credential(sim: Simulator, tmp_path: Path) -> None:
    """--config.file: a block per credential, each with its own verdicts."""
    (tmp_path / "b.token").write_text(WORKERS + "\n")
    conf = tmp_path / "config.yml"
    conf.write_text(
        "credentials:\n"
        f"  - name: agency-a\n    token_env: CF_A\n    accounts: [{ACCOUNT_A}]\n"
        f"  - name: agency-b\n    token_file: b.token\n    accounts: [{ACCOUNT_B}]\n"
    )
    run = check(sim, None, "--config.file", str(conf), CF_A=BOTH)
    assert run.returncode == 1
    blocks = run.stdout.split("credential ")[1:]
    assert [b.split("\n", 1)[0] for b in blocks] == ["agency-a", "agency-b"]
    assert set(rows(blocks[0]).values()) == {OK}
    assert rows(blocks[1])[(ACCOUNT_B, "analytics")] == MISSING


@pytest.mark.parametrize(
    "args",
    [("--once",), ("--account-id", "not-an-account"), ("--interval", "1")],
    ids=["with-once", "bad-account", "bad-interval"],
)
def test_bad_configuration_exits_2(sim: Simulator, args: tuple[str, ...]) -> None:
    """Bad configuration: exit 2 and one line on stderr, nothing checked."""
    run = check(sim, BOTH, *args, process=args == ("--once",))
    assert run.returncode == 2
    assert run.stdout == "" and len(run.stderr.strip().splitlines()) == 1


def test_demo_check_works() -> None:
    """--check --demo checks the built-in simulator's token: everything works."""
    run = subprocess.run(
        [sys.executable, "-m", "do_exporter", "--check", "--demo"],
        capture_output=True,
        text=True,
        timeout=SAFETY_TIMEOUT,
        env=clean_env(),
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "everything works" in run.stdout


# ---- pure parts ----------------------------------------------------------------------------


def test_poll_plan_and_exit_status_are_pure() -> None:
    """The plan counts lists and one page per namespace; unknown counts make it unknown."""
    report = CredentialReport(
        "x",
        TokenStatus("active", "user"),
        discovered=True,
        namespaces={ACCOUNT_A: 1500, ACCOUNT_B: 0},
        api_rate_limit=1000,
    )
    plan = poll_plan(report, 300)
    assert (plan.account_lists, plan.namespace_lists, plan.namespaces) == (1, 3, 1500)
    assert plan.requests == 1504 and plan.fits is False
    unknown = CredentialReport("x", TokenStatus("active", "user"), namespaces={ACCOUNT_A: None})
    assert poll_plan(unknown, 300).requests is None
    assert "plan     unknown" in render(unknown, interval=300, now=0)
    assert exit_status([report], 0) == 0
    broken = CredentialReport(
        "x",
        TokenStatus("active", "user"),
        results=(Result(ACCOUNT_A, "objects", "FAILED", "HTTP 500"),),
    )
    assert exit_status([report, broken], 0) == 1
