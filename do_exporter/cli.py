"""``do-exporter`` command line: parse flags, build the config, run. The only place that exits."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

import structlog

from . import __version__
from .app import Exporter, StartupError, Target, targets_from
from .check import demo_credential, run_check
from .config import (
    DEFAULT_ANALYTICS_DELAY,
    DEFAULT_API_RESERVE,
    DEFAULT_API_URL,
    DEFAULT_CONCURRENCY,
    DEFAULT_GRAPHQL_RATE_LIMIT,
    DEFAULT_RATE_LIMIT,
    DEFAULT_TIMEOUT,
    DEMO_INTERVAL,
    MIN_INTERVAL,
    Config,
    ConfigError,
    RawOptions,
    Secret,
    build_config,
)
from .logs import configure
from .signals import Inbox
from .webconfig import load_web_config

PROG = "do-exporter"
log = structlog.get_logger("do_exporter.cli")

DESCRIPTION = """\
Prometheus exporter for Cloudflare Durable Objects. Polls the Cloudflare API on an interval
(namespaces, objects, objects with stored data) and serves the counts on /metrics.
Every flag has an environment variable (shown in brackets); a flag wins over its variable."""

EPILOG = f"""\
examples:
  {PROG} --demo                                   live metrics from the built-in simulator
  {PROG} --api-token-file /run/secrets/cf-token   every account the token can read
  {PROG} --account-id 0123456789abcdef0123456789abcdef --interval 120
  {PROG} --once --demo                            poll once, print the metrics, exit
  {PROG} --check --api-token-file /run/secrets/cf-token   is the token right? (exit 0/1/2)
  {PROG} --config.file /etc/do-exporter/config.yml  several tokens (see the README)

The token needs "Workers Scripts Read" on the accounts to export (Account > Workers
Scripts > Read). A token file is re-read when it changes (checked every 30 s) and on
SIGHUP. Endpoints: /metrics, /healthz, /readyz, /. Exit status: 0 ok, 1 --once poll
incomplete or --check found something missing, 2 bad configuration, 130 --once interrupted."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage block: the user asked for --help if they want it.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    api = p.add_argument_group("Cloudflare API")
    api.add_argument(
        "--api-token",
        metavar="TOKEN",
        help="API token, 32..256 visible ASCII characters (Cloudflare's are 40) "
        "[CLOUDFLARE_API_TOKEN]; prefer --api-token-file: a flag shows in ps",
    )
    api.add_argument(
        "--api-token-file",
        metavar="PATH",
        help="read the API token from a file (Kubernetes/Docker secrets; a regular file "
        "of at most 4 KiB), re-read when it changes and on SIGHUP [CLOUDFLARE_API_TOKEN_FILE]",
    )
    api.add_argument(
        "--config.file",
        metavar="PATH",
        dest="config_file",
        help="YAML file listing several credentials (name, token_file or token_env, "
        "accounts, api_rate_limit, api_reserve), instead of the token, account and budget "
        "flags above and below [DO_EXPORTER_CONFIG_FILE]",
    )
    api.add_argument(
        "--account-id",
        metavar="ID",
        action="append",
        default=[],
        dest="account_ids",
        help="account to export; repeat for several [CLOUDFLARE_ACCOUNT_ID, comma-separated]; "
        "default: every account the token can read (GET /accounts)",
    )
    api.add_argument(
        "--api-url",
        metavar="URL",
        help=f"API base URL [CLOUDFLARE_API_URL] (default {DEFAULT_API_URL})",
    )
    api.add_argument(
        "--api-rate-limit",
        metavar="N",
        help="most API requests per 5 minutes, all accounts together "
        f"[DO_EXPORTER_API_RATE_LIMIT] (default {DEFAULT_RATE_LIMIT}; Cloudflare allows "
        "1200 per user for every tool together)",
    )
    api.add_argument(
        "--api-reserve",
        metavar="N",
        help="requests per Cloudflare rate-limit window left to your other tools: the "
        "exporter sends nothing while Cloudflare says this many or fewer are left "
        f"[DO_EXPORTER_API_RESERVE] (default {DEFAULT_API_RESERVE}, 20%% of 1200; 0..100000)",
    )
    api.add_argument(
        "--api-timeout",
        metavar="SECONDS",
        help=f"read timeout of one API request [DO_EXPORTER_API_TIMEOUT] "
        f"(default {DEFAULT_TIMEOUT:g})",
    )
    api.add_argument(
        "--max-concurrency",
        metavar="N",
        help="most API requests in flight at once; the rate limit paces them "
        f"[DO_EXPORTER_MAX_CONCURRENCY] (default {DEFAULT_CONCURRENCY})",
    )
    usage = p.add_argument_group("usage analytics (GraphQL Analytics API)")
    usage.add_argument(
        "--analytics",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="export per-namespace usage (requests, errors, CPU, GB-s, SQLite rows and "
        "storage, WebSockets): one GraphQL query per account per poll; the token needs "
        "Account Analytics: Read [DO_EXPORTER_ANALYTICS=true|false] (default on)",
    )
    usage.add_argument(
        "--analytics-delay",
        metavar="SECONDS",
        help="count only minutes that closed at least this long ago: Cloudflare's newest "
        f"analytics are incomplete [DO_EXPORTER_ANALYTICS_DELAY] (default "
        f"{DEFAULT_ANALYTICS_DELAY:g}; 0..3600)",
    )
    usage.add_argument(
        "--graphql-rate-limit",
        metavar="N",
        help="most GraphQL queries per 5 minutes per credential [DO_EXPORTER_GRAPHQL_RATE_LIMIT] "
        f"(default {DEFAULT_GRAPHQL_RATE_LIMIT}; Cloudflare allows 300 per user)",
    )
    run = p.add_argument_group("polling and serving")
    run.add_argument(
        "--interval",
        metavar="SECONDS",
        help=f"seconds between polls, at least {MIN_INTERVAL:g} [DO_EXPORTER_INTERVAL] "
        f"(default 300; {DEMO_INTERVAL:g} with --demo)",
    )
    run.add_argument(
        "--web.listen-address",
        metavar="HOST:PORT",
        dest="listen_address",
        help="where to serve /metrics [DO_EXPORTER_LISTEN_ADDRESS] (default :9877, "
        "every interface)",
    )
    # The spelling before Prometheus' own: still accepted, no longer shown.
    run.add_argument("--listen-address", dest="listen_address", help=argparse.SUPPRESS)
    run.add_argument(
        "--web.config.file",
        metavar="PATH",
        dest="web_config_file",
        help="TLS and basic auth for the endpoint, in the Prometheus exporter-toolkit "
        "format [DO_EXPORTER_WEB_CONFIG_FILE]",
    )
    run.add_argument(
        "--once",
        action="store_true",
        help="poll once, print the metrics to stdout and exit: 0 if every account and "
        "namespace was read, else 1",
    )
    run.add_argument(
        "--check",
        action="store_true",
        help="verify each token and try each permission once per account, print a table "
        "and exit: 0 if everything works, 1 if something is missing, 2 for bad configuration",
    )
    run.add_argument(
        "--demo",
        action="store_true",
        help="run against the built-in Cloudflare API simulator (no account or token needed)",
    )
    logs = p.add_argument_group("logging")
    logs.add_argument(
        "--log-level",
        metavar="LEVEL",
        help="debug, info, warning or error [DO_EXPORTER_LOG_LEVEL] (default info)",
    )
    logs.add_argument(
        "--log-format",
        metavar="FORMAT",
        help="json or console [DO_EXPORTER_LOG_FORMAT] (default console on a terminal, else json)",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def parse_options(argv: Sequence[str] | None) -> RawOptions:
    return _options(build_parser().parse_args(argv))


def _options(ns: argparse.Namespace) -> RawOptions:
    return RawOptions(
        api_token=ns.api_token,
        api_token_file=ns.api_token_file,
        account_ids=tuple(ns.account_ids),
        api_url=ns.api_url,
        interval=ns.interval,
        listen_address=ns.listen_address,
        api_rate_limit=ns.api_rate_limit,
        api_timeout=ns.api_timeout,
        max_concurrency=ns.max_concurrency,
        log_level=ns.log_level,
        log_format=ns.log_format,
        web_config_file=ns.web_config_file,
        once=ns.once,
        demo=ns.demo,
        api_reserve=ns.api_reserve,
        config_file=ns.config_file,
        analytics=ns.analytics,
        analytics_delay=ns.analytics_delay,
        graphql_rate_limit=ns.graphql_rate_limit,
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers, or during --once
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _main(argv: Sequence[str] | None) -> int:
    ns = build_parser().parse_args(argv)
    if ns.check and ns.once:
        print(f"{PROG}: error: --check and --once: give only one of them", file=sys.stderr)
        return 2
    raw = _options(ns)
    try:
        config = build_config(raw, os.environ, stderr_is_tty=sys.stderr.isatty())
        web = load_web_config(config.web_config_file) if config.web_config_file else None
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    # --check prints its findings as a table: its logs are for errors unless asked for.
    quiet = ns.check and raw.log_level is None and not os.environ.get("DO_EXPORTER_LOG_LEVEL")
    configure(
        level="error" if quiet else config.log_level,
        fmt=config.log_format,
        secrets=[credential.token for credential in config.credentials],
    )
    if ns.check:
        return _check(config)
    simulator = None
    if config.demo:
        from .simulator import Simulator, demo_scenario

        simulator = Simulator(demo_scenario(), host="127.0.0.1", port=0)
        simulator.start()
        targets: tuple[Target, ...] = (Target(simulator.api_url, Secret(simulator.token), ()),)
        log.info(
            "demo mode: exporting from the built-in Cloudflare API simulator",
            simulator=simulator.api_url,
        )
    else:
        targets = targets_from(config)
    try:
        exporter = Exporter(config, targets, web=web)
        if config.once:
            return _once(exporter)
        return _serve(exporter, config)
    except StartupError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if simulator is not None:
            simulator.stop()


def _check(config: Config) -> int:
    if not config.demo:
        return run_check(config, sys.stdout)
    from .simulator import Simulator, demo_scenario

    with Simulator(demo_scenario(), host="127.0.0.1", port=0) as simulator:
        return run_check(
            config,
            sys.stdout,
            credentials=[demo_credential(simulator.token)],
            api_url=simulator.api_url,
        )


def _once(exporter: Exporter) -> int:
    try:
        # The token first, as the daemon does at start: the output then holds every family
        # the daemon serves after its first poll (the token health ones included).
        exporter.verify_tokens()
        snapshot = exporter.poll_once()
    except KeyboardInterrupt:
        exporter.cancel.set()  # the poll's workers stop at their next request
        raise
    sys.stdout.buffer.write(exporter.exposition())
    sys.stdout.flush()
    if snapshot.complete:
        return 0
    problems = []
    for account in snapshot.accounts:
        if not account.last_poll_success:
            listed = (
                "namespace list or counts failed"
                if account.namespaces_listed
                else ("namespace list failed")
            )
            problems.append(f"account {account.account_id}: {listed}")
    if not problems:
        problems.append("account discovery (GET /accounts) failed")
    print(
        f"{PROG}: incomplete poll: {'; '.join(problems)} (details in the log above)",
        file=sys.stderr,
    )
    return 1


def _serve(exporter: Exporter, config: Config) -> int:
    """Run the daemon until SIGTERM or SIGINT; SIGHUP re-reads the token files.

    The signal handlers only wake this (main) thread through a pipe (:mod:`.signals`), so
    storms of signals are harmless; shutdown is bounded (:meth:`Exporter.stop`).
    """
    with Inbox((signal.SIGTERM, signal.SIGINT, signal.SIGHUP)) as inbox:
        exporter.start()
        try:
            while not (caught := inbox.wait()) & {signal.SIGTERM, signal.SIGINT}:
                if signal.SIGHUP in caught:
                    try:
                        exporter.reload_tokens()
                    except Exception:  # a bug here must not end SIGHUP handling
                        log.exception("re-reading the API token files failed")
        finally:
            exporter.stop()
    return 0
