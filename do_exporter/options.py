"""The option table: every flag with its environment variable, parser, bounds, default, help
and group, declared once.

Everything else reads it: ``cli.build_parser`` (argparse), ``config.build_config`` (the
environment fallback, validation and its one-line error messages) and the table of
``docs/configuration.md`` (a test keeps the two equal). A flag wins over its variable; an
empty variable counts as unset. Errors name ``--flag/VARIABLE`` and never echo a secret.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .metrics.groups import GROUPS

DEFAULT_API_URL = "https://api.cloudflare.com/client/v4"
DEFAULT_INTERVAL = 300.0
DEMO_INTERVAL = 15.0
MIN_INTERVAL = 10.0
MAX_INTERVAL = 86_400.0
DEFAULT_LISTEN = ":9877"
DEFAULT_RATE_LIMIT = 1000
MAX_RATE_LIMIT = 100_000
# Requests per Cloudflare rate-limit window left to the user's other tools: 20% of 1,200.
DEFAULT_API_RESERVE = 240
MAX_API_RESERVE = 100_000
DEFAULT_TIMEOUT = 30.0
DEFAULT_CONCURRENCY = 64
DEFAULT_ANALYTICS_DELAY = 300.0  # Cloudflare's analytics of the last minutes are incomplete
MAX_ANALYTICS_DELAY = 3600.0
DEFAULT_GRAPHQL_RATE_LIMIT = 250  # GraphQL queries per 5 minutes; Cloudflare allows 300
DEFAULT_TOP_OBJECTS = 10
MAX_TOP_OBJECTS = 100
MAX_PATTERN_LENGTH = 1024  # characters of a --namespace-include/-exclude expression
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "console")
DOCS = "docs/configuration.md"


class ConfigError(ValueError):
    """A configuration value is missing or wrong; ``str()`` is one line for the user."""


def shown(text: str, limit: int = 40) -> str:
    """A value the user typed, quoted for a message: one line, at most ``limit`` characters."""
    text = text.strip()
    cut = text[:limit] + ("..." if len(text) > limit else "")
    return '"' + cut.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


# -- parsers: text and where it came from -> value, or ConfigError ---------------------------


class Parser(Protocol):
    @property
    def bounds(self) -> str: ...

    def __call__(self, text: str, where: str) -> Any: ...


@dataclass(frozen=True)
class Number:
    """A finite number (``integer``: a whole one) within ``minimum..maximum``."""

    minimum: float
    maximum: float
    integer: bool = False

    @property
    def bounds(self) -> str:
        return f"{self.minimum:g}..{self.maximum:g}"

    def __call__(self, text: str, where: str) -> float | int:
        kind = "a whole number" if self.integer else "a number"
        if len(text) > 40:
            raise ConfigError(f"{where}: {shown(text)} is not {kind}")
        try:
            value: float | int = int(text) if self.integer else float(text)
        except ValueError:
            raise ConfigError(f"{where}: {shown(text)} is not {kind}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{where}: {shown(text)} is not a finite number")
        if value < self.minimum:
            raise ConfigError(f"{where}: {shown(text)} is below the minimum of {self.minimum:g}")
        if value > self.maximum:
            raise ConfigError(f"{where}: {shown(text)} is above the maximum of {self.maximum:g}")
        return value


@dataclass(frozen=True)
class Choice:
    """One of ``choices``, case-insensitive."""

    choices: tuple[str, ...]
    noun: str

    @property
    def bounds(self) -> str:
        return " | ".join(self.choices)

    def __call__(self, text: str, where: str) -> str:
        value = text.strip().lower()
        if value not in self.choices:
            raise ConfigError(
                f"{where}: unknown {self.noun} {value[:20]!r} "
                f"(choose from {', '.join(self.choices)})"
            )
        return value


@dataclass(frozen=True)
class Text:
    """Any non-empty text (a path)."""

    bounds: str = ""

    def __call__(self, text: str, where: str) -> str:
        return text


@dataclass(frozen=True)
class Url:
    """An http(s) base URL, without a trailing slash."""

    bounds: str = "http(s) URL"

    def __call__(self, text: str, where: str) -> str:
        value = text.rstrip("/")
        if len(value) > 2048 or not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
            raise ConfigError(
                f"{where}: {shown(value)} is not an http(s) URL "
                "(for example https://api.cloudflare.com/client/v4)"
            )
        return value


@dataclass(frozen=True)
class ListenAddress:
    """``HOST:PORT`` (``:9877``, ``0.0.0.0:9877``, ``[::1]:9877``) -> (host, port)."""

    bounds: str = "HOST:PORT, port 1..65535"

    def __call__(self, text: str, where: str) -> tuple[str, int]:
        match = re.fullmatch(r"(?:\[([0-9A-Fa-f:.]+)\]|([^\s:\[\]]*)):(\d{1,5})", text.strip())
        if not match:
            raise ConfigError(f"{where}: {shown(text)} is not HOST:PORT (for example :9877)")
        host = match.group(1) or match.group(2) or ""
        port = int(match.group(3))
        if not 0 < port < 65536:
            raise ConfigError(f"{where}: port {port} is out of range 1..65535")
        return host, port


@dataclass(frozen=True)
class Boolean:
    """An on/off environment value."""

    bounds: str = "true | false"

    def __call__(self, text: str, where: str) -> bool:
        value = text.strip().lower()
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: {shown(text, 20)} is not true or false")


@dataclass(frozen=True)
class Pattern:
    """A regular expression (Python ``re`` syntax), compiled now, at most 1,024 characters."""

    bounds: str = f"regex, at most {MAX_PATTERN_LENGTH} characters"

    def __call__(self, text: str, where: str) -> re.Pattern[str]:
        if len(text) > MAX_PATTERN_LENGTH:
            raise ConfigError(
                f"{where}: the expression is {len(text)} characters long "
                f"(at most {MAX_PATTERN_LENGTH})"
            )
        try:
            return re.compile(text)
        except (re.error, RecursionError, OverflowError, ValueError) as exc:
            reason = " ".join(str(exc).split())[:120]
            raise ConfigError(f"{where}: not a valid regular expression: {reason}") from None


@dataclass(frozen=True)
class GroupList:
    """Comma-separated collector groups (empty items ignored)."""

    bounds: str = ", ".join(GROUPS)

    def __call__(self, text: str, where: str) -> frozenset[str]:
        names = [n.strip().lower() for n in text.split(",") if n.strip()]
        for name in names:
            if name not in GROUPS:
                raise ConfigError(
                    f"{where}: unknown collector group {shown(name, 30)} "
                    f"(choose from {', '.join(GROUPS)})"
                )
        return frozenset(names)


# -- the table --------------------------------------------------------------------------------

VALUE = "value"  # --flag VALUE
LIST = "list"  # repeatable flag; the variable is comma-separated
SWITCH = "switch"  # --flag (no variable)
TOGGLE = "toggle"  # --flag / --no-flag; the variable is true or false

API, USAGE, EXPORT, RUN, LOGS = (
    "Cloudflare API",
    "usage analytics (GraphQL Analytics API)",
    "what to export",
    "polling and serving",
    "logging",
)


@dataclass(frozen=True)
class Option:
    """One option. ``flag`` None: a variable only; ``env`` None: a flag only."""

    dest: str
    flag: str | None
    env: str | None
    help: str
    group: str
    kind: str = VALUE
    parse: Parser | None = None
    default: Any = None
    default_doc: str = ""  # the default as the docs say it ("" = none)
    metavar: str | None = None
    aliases: tuple[str, ...] = ()  # older spellings: accepted, not shown
    hidden: bool = False  # left out of --help (the group's description covers it)
    secret: bool = False  # its value never shows in repr
    credential: bool = False  # --config.file replaces it

    @property
    def where(self) -> str:
        """How messages name it: ``--flag/VARIABLE``."""
        return "/".join(n for n in (self.flag, self.env) if n)

    @property
    def bounds(self) -> str:
        return self.parse.bounds if self.parse is not None else ""


_GROUP_HELP = {
    "inventory": "per-namespace inventory: object counts, namespace info",
    "usage": "usage counters: requests, errors, CPU, GB-s, rows",
    "storage": "stored bytes and storage units",
    "websockets": "WebSocket connections and messages",
    "hot_objects": "the busiest objects per account (--top-objects)",
    "latency": "wall-time percentiles and maximum per namespace",
}


def _collector(group: str) -> Option:
    return Option(
        f"collector_{group}",
        f"--collector.{group}",
        None,
        f"export the {group} group: {_GROUP_HELP.get(group, 'its families')}",
        EXPORT,
        kind=TOGGLE,
        default=True,
        default_doc="on",
        hidden=True,
    )


OPTIONS: tuple[Option, ...] = (
    Option("api_token", "--api-token", "CLOUDFLARE_API_TOKEN",
           "API token (a flag shows in ps: prefer the file)", API, metavar="TOKEN",
           default_doc="required unless --demo or --config.file", secret=True,
           credential=True, parse=Text("32..256 visible ASCII characters")),
    Option("api_token_file", "--api-token-file", "CLOUDFLARE_API_TOKEN_FILE",
           "read the token from a file; re-read when it changes", API, metavar="PATH",
           credential=True, parse=Text("regular file, at most 4 KiB")),
    Option("config_file", "--config.file", "DO_EXPORTER_CONFIG_FILE",
           "YAML file listing several credentials", API, metavar="PATH",
           default_doc="none (one credential, from the flags)", parse=Text("at most 1 MiB")),
    Option("account_ids", "--account-id", "CLOUDFLARE_ACCOUNT_ID",
           "account to export (repeat; env: comma-separated)", API, kind=LIST, metavar="ID",
           default_doc="every account the token can read", credential=True,
           parse=Text("32 lowercase hex characters")),
    Option("api_url", "--api-url", "CLOUDFLARE_API_URL", "API base URL", API, metavar="URL",
           parse=Url(), default=DEFAULT_API_URL, default_doc=DEFAULT_API_URL),
    Option("api_rate_limit", "--api-rate-limit", "DO_EXPORTER_API_RATE_LIMIT",
           "most API requests per 5 minutes", API, metavar="N",
           parse=Number(1, MAX_RATE_LIMIT, integer=True), default=DEFAULT_RATE_LIMIT,
           default_doc=str(DEFAULT_RATE_LIMIT), credential=True),
    Option("api_reserve", "--api-reserve", "DO_EXPORTER_API_RESERVE",
           "requests per window left to your other tools", API, metavar="N",
           parse=Number(0, MAX_API_RESERVE, integer=True), default=DEFAULT_API_RESERVE,
           default_doc=f"{DEFAULT_API_RESERVE} (20% of 1200)", credential=True),
    Option("api_timeout", "--api-timeout", "DO_EXPORTER_API_TIMEOUT",
           "read timeout of one API request", API, metavar="SECONDS",
           parse=Number(1, 600), default=DEFAULT_TIMEOUT, default_doc=f"{DEFAULT_TIMEOUT:g}"),
    Option("max_concurrency", "--max-concurrency", "DO_EXPORTER_MAX_CONCURRENCY",
           "most API requests in flight at once", API, metavar="N",
           parse=Number(1, 256, integer=True), default=DEFAULT_CONCURRENCY,
           default_doc=str(DEFAULT_CONCURRENCY)),
    Option("analytics", "--analytics", "DO_EXPORTER_ANALYTICS",
           "per-namespace usage from GraphQL (--no-analytics: off)", USAGE, kind=TOGGLE,
           parse=Boolean(), default=True, default_doc="on"),
    Option("analytics_delay", "--analytics-delay", "DO_EXPORTER_ANALYTICS_DELAY",
           "count only minutes closed this long ago", USAGE, metavar="SECONDS",
           parse=Number(0, MAX_ANALYTICS_DELAY), default=DEFAULT_ANALYTICS_DELAY,
           default_doc=f"{DEFAULT_ANALYTICS_DELAY:g}"),
    Option("graphql_rate_limit", "--graphql-rate-limit", "DO_EXPORTER_GRAPHQL_RATE_LIMIT",
           "most GraphQL queries per 5 minutes", USAGE, metavar="N",
           parse=Number(1, MAX_RATE_LIMIT, integer=True), default=DEFAULT_GRAPHQL_RATE_LIMIT,
           default_doc=str(DEFAULT_GRAPHQL_RATE_LIMIT)),
    Option("top_objects", "--top-objects", "DO_EXPORTER_TOP_OBJECTS",
           "busiest objects per account (0: off)", EXPORT, metavar="N",
           parse=Number(0, MAX_TOP_OBJECTS, integer=True), default=DEFAULT_TOP_OBJECTS,
           default_doc=str(DEFAULT_TOP_OBJECTS)),
    *(_collector(group) for group in GROUPS),
    Option("disabled_collectors", None, "DO_EXPORTER_DISABLED_COLLECTORS",
           "collector groups to turn off, comma-separated", EXPORT, parse=GroupList(),
           default=frozenset(), default_doc="none"),
    Option("namespace_include", "--namespace-include", "DO_EXPORTER_NAMESPACE_INCLUDE",
           "export only namespaces whose name or class matches", EXPORT, metavar="REGEX",
           parse=Pattern(), default_doc="every namespace"),
    Option("namespace_exclude", "--namespace-exclude", "DO_EXPORTER_NAMESPACE_EXCLUDE",
           "skip namespaces whose name or class matches", EXPORT, metavar="REGEX",
           parse=Pattern(), default_doc="none"),
    Option("interval", "--interval", "DO_EXPORTER_INTERVAL", "seconds between polls", RUN,
           metavar="SECONDS", parse=Number(MIN_INTERVAL, MAX_INTERVAL),
           default=DEFAULT_INTERVAL,
           default_doc=f"{DEFAULT_INTERVAL:g} ({DEMO_INTERVAL:g} with --demo)"),
    Option("listen_address", "--web.listen-address", "DO_EXPORTER_LISTEN_ADDRESS",
           "where to serve /metrics", RUN, metavar="HOST:PORT", parse=ListenAddress(),
           default=DEFAULT_LISTEN, default_doc=f"{DEFAULT_LISTEN} (every interface)",
           aliases=("--listen-address",)),
    Option("web_config_file", "--web.config.file", "DO_EXPORTER_WEB_CONFIG_FILE",
           "TLS and basic auth (exporter-toolkit format)", RUN, metavar="PATH",
           parse=Text("at most 1 MiB"), default_doc="none (plain HTTP, no auth)"),
    Option("once", "--once", None, "poll once, print the metrics, exit 0 or 1", RUN,
           kind=SWITCH, default=False),
    Option("check", "--check", None, "check each token and permission, exit 0/1/2", RUN,
           kind=SWITCH, default=False),
    Option("demo", "--demo", None, "export from the built-in API simulator", RUN,
           kind=SWITCH, default=False),
    Option("log_level", "--log-level", "DO_EXPORTER_LOG_LEVEL",
           "debug, info, warning or error", LOGS,
           metavar="LEVEL", parse=Choice(LOG_LEVELS, "level"), default="info",
           default_doc="info"),
    Option("log_format", "--log-format", "DO_EXPORTER_LOG_FORMAT",
           "json, or console (the default on a terminal)", LOGS,
           metavar="FORMAT", parse=Choice(LOG_FORMATS, "format"),
           default_doc="console on a terminal, else json"),
)  # fmt: skip

BY_DEST: Mapping[str, Option] = {o.dest: o for o in OPTIONS}
GROUP_ORDER = (API, USAGE, EXPORT, RUN, LOGS)


def flags() -> Iterator[str]:
    """Every flag spelling the command accepts (shown or not), ``--no-`` forms included."""
    for o in OPTIONS:
        if o.flag is None:
            continue
        yield o.flag
        yield from o.aliases
        if o.kind == TOGGLE:
            yield "--no-" + o.flag[2:]


class RawOptions:
    """What the command line gave, before the environment and validation.

    ``dest -> value``; a value absent or None was not given. Secret values never show in
    ``repr``.
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any] | None = None, **given: Any) -> None:
        self._values = {**(values or {}), **given}

    def get(self, dest: str) -> Any:
        return self._values.get(dest)

    def __getattr__(self, dest: str) -> Any:
        if dest.startswith("_"):
            raise AttributeError(dest)
        return self._values.get(dest)

    def __repr__(self) -> str:
        shown_values = {
            k: ("**********" if v is not None and BY_DEST.get(k, _PLAIN).secret else v)
            for k, v in self._values.items()
        }
        return f"RawOptions({shown_values!r})"


_PLAIN = Option("", None, None, "", "")


def markdown_table() -> str:
    """The table of docs/configuration.md, from :data:`OPTIONS` (a test keeps them equal)."""
    rows = [
        "| flag | environment variable | default | accepted values | what |",
        "| --- | --- | --- | --- | --- |",
    ]
    for o in OPTIONS:
        if o.flag is None:
            flag = ""
        elif o.kind == TOGGLE:
            flag = f"`{o.flag}`, `--no-{o.flag[2:]}`"
        else:
            flag = f"`{o.flag}{' ' + o.metavar if o.metavar else ''}`"
            flag += " (repeatable)" if o.kind == LIST else ""
        env = f"`{o.env}`" if o.env else ""
        cells = (flag, env, o.default_doc, o.bounds, o.help)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # python -m do_exporter.options: print the docs' table
    print(markdown_table(), end="")
