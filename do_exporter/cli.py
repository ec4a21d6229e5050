"""``do-exporter`` command line: parse flags, build the config, run. The only place that exits."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

import structlog

from . import __version__
from .app import Exporter, StartupError
from .check import demo_credential, run_check
from .config import (
    DEFAULT_CREDENTIAL,
    Config,
    ConfigError,
    Credential,
    RawOptions,
    Secret,
    build_config,
)
from .logs import configure
from .metrics.groups import GROUPS
from .options import DOCS, GROUP_ORDER, LIST, OPTIONS, SWITCH, TOGGLE, Option, shown
from .signals import Inbox

if TYPE_CHECKING:
    from .webconfig import WebConfig

PROG = "do-exporter"
log = structlog.get_logger("do_exporter.cli")
WIDTH = 80  # --help fits 80 columns whatever the terminal

DESCRIPTION = f"""\
Prometheus exporter for Cloudflare Durable Objects: polls the Cloudflare API and
serves the counts and usage on /metrics. Every flag has an environment variable
(in brackets); a flag wins. Details of every option: {DOCS}."""

EPILOG = f"""\
examples:
  {PROG} --demo                     metrics from the built-in simulator
  {PROG} --api-token-file PATH      every account the token can read
  {PROG} --check --api-token-file PATH   is the token right? (exit 0/1/2)
  {PROG} --config.file PATH         several tokens, each with its accounts

Exit status: 0 ok, 1 incomplete --once or --check found a problem,
2 bad configuration, 130 --once interrupted."""

_PAD = " " * 28  # where argparse starts help texts, less the group's indent
_GROUP_NOTES = {
    "what to export": f"--[no-]collector.GROUP      export a group of families, or not (all on):\n"
    f"{_PAD}{', '.join(GROUPS[:3])},\n{_PAD}{', '.join(GROUPS[3:])}\n"
    f"{_PAD}[DO_EXPORTER_DISABLED_COLLECTORS=GROUP,...]",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage block: the user asked for --help if they want it.
        self.exit(2, f"{self.prog}: error: {_unknown_group(message) or message} (see --help)\n")


def _unknown_group(message: str) -> str | None:
    """For ``--collector.bogus``: name the groups, as DO_EXPORTER_DISABLED_COLLECTORS does."""
    if not message.startswith("unrecognized arguments: "):
        return None
    words = message.removeprefix("unrecognized arguments: ").split()
    flag = words[0].partition("=")[0] if len(words) == 1 else ""
    if not flag.startswith(("--collector.", "--no-collector.")):
        return None
    group = shown(flag.partition(".")[2], 30)
    choices = ", ".join(GROUPS)
    return f"--[no-]collector.GROUP: unknown collector group {group} (choose from {choices})"


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, width=WIDTH, max_help_position=30)


def _help(option: Option) -> str:
    if option.hidden:
        return argparse.SUPPRESS
    text = option.help
    if option.env:
        text += f" [{option.env}]"
    if isinstance(option.default, int | float | str) and option.kind not in (SWITCH, TOGGLE):
        default = f"{option.default:g}" if isinstance(option.default, float) else option.default
        text += f" (default {default})"
    return text.replace("%", "%%")


def _add(group: argparse._ArgumentGroup, option: Option) -> None:
    assert option.flag is not None
    kwargs: dict[str, object] = {"dest": option.dest, "help": _help(option)}
    if option.kind == SWITCH:
        kwargs["action"] = "store_true"
    elif option.kind == TOGGLE:
        kwargs.update(action=argparse.BooleanOptionalAction, default=None)
    elif option.kind == LIST:
        kwargs.update(action="append", default=[], metavar=option.metavar)
    else:
        kwargs["metavar"] = option.metavar
    group.add_argument(option.flag, **kwargs)  # type: ignore[arg-type]
    for alias in option.aliases:  # an older spelling: still accepted, no longer shown
        group.add_argument(alias, dest=option.dest, help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    """The command line, from the option table (:mod:`do_exporter.options`)."""
    p = _Parser(
        prog=PROG,
        usage=f"{PROG} [FLAGS]   (details: {DOCS})",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=_formatter,
    )
    for name in GROUP_ORDER:
        group = p.add_argument_group(name, _GROUP_NOTES.get(name))
        for option in OPTIONS:
            if option.group == name and option.flag is not None:
                _add(group, option)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def parse_options(argv: Sequence[str] | None) -> RawOptions:
    return _options(build_parser().parse_args(argv))


def _options(ns: argparse.Namespace) -> RawOptions:
    values = {o.dest: getattr(ns, o.dest) for o in OPTIONS if o.flag is not None}
    values["account_ids"] = tuple(values.get("account_ids") or ())
    return RawOptions(values)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers, or during --once
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _main(argv: Sequence[str] | None) -> int:
    raw = parse_options(argv)
    if raw.check and raw.once:
        print(f"{PROG}: error: --check and --once: give only one of them", file=sys.stderr)
        return 2
    try:
        config = build_config(raw, os.environ, stderr_is_tty=sys.stderr.isatty())
        web: WebConfig | None = None
        if config.web_config_file:
            from .webconfig import load_web_config  # bcrypt and PyYAML, only when it is used

            web = load_web_config(config.web_config_file)
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    # --check prints its findings as a table: its logs are for errors unless asked for.
    quiet = raw.check and raw.log_level is None and not os.environ.get("DO_EXPORTER_LOG_LEVEL")
    configure(
        level="error" if quiet else config.log_level,
        fmt=config.log_format,
        secrets=[credential.token for credential in config.credentials],
    )
    if raw.check:
        return _check(config)
    simulator = None
    if config.demo:
        from .simulator import Simulator, demo_scenario

        simulator = Simulator(demo_scenario(), host="127.0.0.1", port=0)
        simulator.start()
        credentials: tuple[Credential, ...] = (
            Credential(
                DEFAULT_CREDENTIAL, token=Secret(simulator.token), api_url=simulator.api_url
            ),
        )
        log.info(
            "demo mode: exporting from the built-in Cloudflare API simulator",
            simulator=simulator.api_url,
        )
    else:
        credentials = config.credentials
    try:
        exporter = Exporter(config, credentials, web=web)
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
    for part in exporter.exposition_parts():  # streamed: the text is never held whole
        sys.stdout.buffer.write(part)
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
