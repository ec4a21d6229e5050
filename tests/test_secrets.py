"""The API token never leaves the process: not in logs, metrics, pages, help or reprs.

One full faulty run of the command (a subprocess at ``--log-level debug``) against a
simulator that fails a share of requests (5xx, 429 with Retry-After, HTML, resets, truncated
JSON, ``success: false``), so retries and every error path log; then the token is revoked,
so the 403 path logs too. Every byte the process wrote and every page it served is searched
for the token, and for its distinctive second half (a partial leak counts too).
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import requests
import structlog

from do_exporter.app import Exporter
from do_exporter.cli import parse_options
from do_exporter.cloudflare import CloudflareAPIError
from do_exporter.config import Config, ConfigError, Credential, build_config
from do_exporter.logs import configure
from do_exporter.simulator import Simulator
from tests.conftest import ACCOUNT_A, ACCOUNT_B, TOKEN, ns, scenario
from tests.ports import free_port
from tests.support import run_cli, wait_until
from tests.test_cli import clean_env

MakeSim = Callable[..., Simulator]
NEEDLES = (TOKEN, TOKEN[len(TOKEN) // 2 :])

FAULTS = {
    "rules": [
        {"fault": "status", "status": 500, "rate": 0.15},
        {"fault": "status", "status": 429, "retry_after": 1, "rate": 0.05, "burst": 2},
        {"fault": "html", "status": 502, "rate": 0.05},
        {"fault": "drop", "rate": 0.05, "endpoint": "objects"},
        {"fault": "truncated", "rate": 0.05},
        {"fault": "success_false", "rate": 0.05},
    ]
}


def assert_no_token(where: str, text: str | bytes) -> None:
    data = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    for needle in NEEDLES:
        assert needle not in data, f"the token (or part of it) is in {where}"


def test_token_is_nowhere_in_a_faulty_run(make_sim: MakeSim, tmp_path: Path) -> None:
    """Debug logs with retries and auth failures, /metrics, /, /readyz, --help: no token."""
    sim = make_sim(
        scenario({ACCOUNT_A: [ns(1, 25_000), ns(2, 3)], ACCOUNT_B: [ns(3, 40)]}, faults=FAULTS)
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    err_path, out_path = tmp_path / "stderr", tmp_path / "stdout"
    with open(err_path, "w") as err, open(out_path, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "do_exporter", "--api-url", sim.api_url,
             "--interval", "10", "--listen-address", f"127.0.0.1:{port}",
             "--log-level", "debug", "--log-format", "json"],
            stdout=out,
            stderr=err,
            env=clean_env(CLOUDFLARE_API_TOKEN=TOKEN),
        )  # fmt: skip
        try:
            served: dict[str, bytes] = {}

            def ready() -> bool:
                assert proc.poll() is None, err_path.read_text()
                try:
                    return requests.get(url + "/readyz", timeout=1).status_code == 200
                except requests.ConnectionError:
                    return False

            wait_until(ready, "the first poll")
            for path in ("/metrics", "/", "/readyz", "/healthz", "/nope"):
                served[path] = requests.get(url + path, timeout=2).content
            served["POST /metrics"] = requests.post(url + "/metrics", timeout=2).content
            served["HEAD /"] = requests.head(url + "/", timeout=2).content
            stats = sim.stats()
            assert sum(stats["faults"].values()) > 0  # faults were served, so errors were logged

            sim.revoke_token(TOKEN)
            wait_until(
                lambda: any(
                    code == "403" for codes in sim.stats()["requests"].values() for code in codes
                ),
                "a poll with the revoked token",
            )
            served["/metrics after revocation"] = requests.get(url + "/metrics", timeout=2).content
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0
    stderr = err_path.read_text()
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    failures = [e for e in events if e["event"] == "API request failed"]
    assert any(e["retry"] for e in failures), "the run went through retries"
    assert any(e.get("error_codes") == [10000] for e in failures), "and an auth failure"
    assert any(e["level"] == "debug" for e in events), "debug logging was on"
    assert_no_token("stderr (logs)", stderr)
    assert_no_token("stdout", out_path.read_text())
    for path, body in served.items():
        assert_no_token(path, body)
    assert b"cloudflare_durable_objects_exporter_api_errors_total" in served["/metrics"]


def test_token_is_not_in_help_or_config_errors() -> None:
    """--help with the token in the environment, and a refused configuration, show no token."""
    env = clean_env(CLOUDFLARE_API_TOKEN=TOKEN)
    # In this process (what the command prints is the point; test_cli runs real ones).
    helped = run_cli(["--help"], env)
    assert helped.returncode == 0 and "--api-token" in helped.stdout
    assert_no_token("--help", helped.stdout + helped.stderr)
    refused = run_cli(["--api-token", f"{TOKEN} x", "--interval", "5"], env)
    assert refused.returncode == 2
    assert_no_token("a configuration error", refused.stdout + refused.stderr)


def test_reprs_hide_the_token(tmp_path: Path) -> None:
    """repr and str of the config, its credentials, token sources, target, client, errors."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    config_file = tmp_path / "config.yml"
    config_file.write_text(
        "credentials:\n  - {name: a, token_file: token}\n  - {name: b, token_env: CF_B}\n"
    )
    for argv, env in (
        (["--api-token", TOKEN], {}),
        (["--api-token-file", str(token_file)], {}),
        ([], {"CLOUDFLARE_API_TOKEN": TOKEN}),
        (["--config.file", str(config_file)], {"CF_B": TOKEN}),
    ):
        config = build_config(parse_options(argv), env, stderr_is_tty=False)
        assert config.api_token.reveal() == TOKEN
        target = Credential("default", token=config.api_token, api_url=config.api_url)
        exporter = Exporter(Config(listen_port=0, credentials=(target,)))
        try:
            for name, obj in {
                "config": config,
                "token": config.api_token,
                "target": target,
                "client": exporter.client,
                "session headers": exporter.session.headers,
                "credentials": config.credentials,
                "token sources": exporter.tokens,
            }.items():
                assert_no_token(f"repr({name})", repr(obj))
                assert_no_token(f"str({name})", str(obj))
                assert_no_token(f"format({name})", f"{obj}")
        finally:
            exporter.session.close()
    error = CloudflareAPIError(
        "request failed", endpoint="objects", kind="api", status=403, codes=(10000,)
    )
    assert_no_token("an API error", f"{error!s} {error!r}")


def test_config_errors_never_echo_a_token(tmp_path: Path) -> None:
    """A token given as an account id, inline in the config file or in its accounts list."""
    config_file = tmp_path / "config.yml"
    cases: list[tuple[list[str], dict[str, str], str]] = [
        (["--api-token", TOKEN, "--account-id", TOKEN], {}, ""),
        ([], {"CLOUDFLARE_API_TOKEN": TOKEN, "CLOUDFLARE_ACCOUNT_ID": TOKEN}, ""),
        (
            ["--config.file", str(config_file)],
            {},
            f"credentials:\n  - {{name: a, token: {TOKEN}}}\n",
        ),
        (
            ["--config.file", str(config_file)],
            {"X": TOKEN},
            f"credentials:\n  - {{name: a, token_env: X, accounts: [{TOKEN}]}}\n",
        ),
        (
            ["--config.file", str(config_file)],
            {"X": TOKEN[:20]},
            "credentials: [{name: a, token_env: X}]",
        ),
    ]
    for argv, env, text in cases:
        config_file.write_text(text)
        try:
            build_config(parse_options(argv), env, stderr_is_tty=False)
        except ConfigError as exc:
            assert_no_token(f"the error for {argv} {sorted(env)}", str(exc))
            assert_no_token("the error", (TOKEN[:20] in str(exc) and TOKEN) or "")
        else:
            raise AssertionError(f"accepted: {argv}")


def test_a_rotated_token_stays_out_of_the_logs(tmp_path: Path) -> None:
    """After a token file rotates, the new token is redacted as well as the old one."""
    path = tmp_path / "token"
    path.write_text(TOKEN)
    config = build_config(parse_options(["--api-token-file", str(path)]), {}, stderr_is_tty=False)
    stream = io.StringIO()
    configure(
        level="debug", fmt="json", secrets=[c.token for c in config.credentials], stream=stream
    )
    new = "new-" + TOKEN[4:]
    path.write_text(new)
    assert config.api_token.reload()
    structlog.get_logger("t").error("oops", header=f"Bearer {new}", old=f"Bearer {TOKEN}")
    assert config.api_token.reveal() == new
    out = stream.getvalue()
    assert "API token reloaded" in out
    assert_no_token("logs after rotation", out)
    assert new not in out and new[len(new) // 2 :] not in out
