"""Configuration: one frozen :class:`Config`, built once from flags, environment and file.

Every option is declared once, in :mod:`.options` (flag, variable, parser, bounds, default,
help); :func:`build_config` walks that table. Flags win over environment variables.
``--config.file`` (:mod:`.configfile`) lists several credentials; without it the flags make
one credential called ``default``. :class:`Credential` is the one resolved credential type,
from here to the poll's executor. Every problem raises :class:`ConfigError` with a one-line
message naming the flag and its variable; ``cli.main()`` alone turns it into exit status 2.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .apifacts import RATE_LIMIT_WINDOW
from .configfile import (
    ACCOUNT_ID,
    CONFIG_FILE,
    bad_account_id,
    load_credentials,
)
from .metrics.groups import GROUPS
from .nsfilter import ALL, NamespaceFilter
from .options import (
    BY_DEST,
    DEFAULT_ANALYTICS_DELAY,
    DEFAULT_API_RESERVE,
    DEFAULT_API_URL,
    DEFAULT_CONCURRENCY,
    DEFAULT_GRAPHQL_RATE_LIMIT,
    DEFAULT_INTERVAL,
    DEFAULT_RATE_LIMIT,
    DEFAULT_TIMEOUT,
    DEFAULT_TOP_OBJECTS,
    DEMO_INTERVAL,
    LIST,
    MAX_RATE_LIMIT,
    OPTIONS,
    SWITCH,
    TOGGLE,
    ConfigError,
    ListenAddress,
    Option,
    RawOptions,
)
from .secrets import (
    Secret,
    TokenFile,
    Unusable,
    check_token,
)

DEFAULT_CREDENTIAL = "default"

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_ANALYTICS_DELAY",
    "DEFAULT_API_RESERVE",
    "DEFAULT_API_URL",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_CREDENTIAL",
    "DEFAULT_GRAPHQL_RATE_LIMIT",
    "DEFAULT_INTERVAL",
    "DEFAULT_RATE_LIMIT",
    "DEFAULT_TIMEOUT",
    "DEFAULT_TOP_OBJECTS",
    "DEMO_INTERVAL",
    "MAX_RATE_LIMIT",
    "Config",
    "ConfigError",
    "Credential",
    "RawOptions",
    "Secret",
    "TokenFile",
    "build_config",
    "check_token",
    "format_address",
    "parse_listen_address",
]


@dataclass(frozen=True, slots=True)
class Credential:
    """One API token with where it goes, its accounts and its budget, resolved: the one
    credential type from the configuration to the poll's executor (planner and poller).

    From the flags (one, named ``default``), ``--config.file`` (several) or the demo
    simulator. ``name`` (never the token) labels the per-budget self-metrics.
    ``account_ids`` empty: every account the token can read (``GET /accounts``).
    ``api_rate_limit``: most requests per 5 minutes for this token; ``api_reserve``: requests
    per Cloudflare window left to the user's other tools. ``budget_per_poll`` (requests one
    interval allows; None: no limit) and ``window_polls`` (polls per rate-limit window) are
    what the planner plans with: :meth:`for_interval` sets them from the rate limit.
    """

    name: str
    account_ids: tuple[str, ...] = ()
    budget_per_poll: float | None = None
    window_polls: float = 1.0
    token: Secret = field(default=Secret(""))
    api_rate_limit: int = DEFAULT_RATE_LIMIT
    api_reserve: int = DEFAULT_API_RESERVE
    api_url: str = DEFAULT_API_URL

    @property
    def discovers(self) -> bool:
        """True when the accounts come from ``GET /accounts``."""
        return not self.account_ids

    def for_interval(self, interval: float) -> Credential:
        """This credential with the budget of one poll every ``interval`` seconds."""
        return replace(
            self,
            budget_per_poll=self.api_rate_limit * interval / RATE_LIMIT_WINDOW,
            window_polls=RATE_LIMIT_WINDOW / interval,
        )


def format_address(host: str, port: int) -> str:
    """``HOST:PORT`` as a user writes it: IPv6 in brackets (``[::1]:9877``), empty host as
    every interface (``0.0.0.0``)."""
    host = host or "0.0.0.0"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the exporter needs to run, validated.

    ``credentials`` is the whole truth about tokens; ``api_token``, ``account_ids``,
    ``api_rate_limit`` and ``api_reserve`` read the first one, for code that handles one.
    """

    credentials: tuple[Credential, ...] = ()
    api_url: str = DEFAULT_API_URL
    interval: float = DEFAULT_INTERVAL
    listen_host: str = ""
    listen_port: int = 9877
    api_timeout: float = DEFAULT_TIMEOUT
    max_concurrency: int = DEFAULT_CONCURRENCY
    log_level: str = "info"
    log_format: str = "json"
    web_config_file: str | None = None
    once: bool = False
    demo: bool = False
    config_file: str | None = None
    analytics: bool = True
    analytics_delay: float = DEFAULT_ANALYTICS_DELAY
    graphql_rate_limit: int = DEFAULT_GRAPHQL_RATE_LIMIT
    top_objects: int = DEFAULT_TOP_OBJECTS  # busiest objects per account; 0: off
    collectors: frozenset[str] = field(default_factory=lambda: frozenset(GROUPS))
    namespace_filter: NamespaceFilter = ALL

    @property
    def listen_address(self) -> str:
        return format_address(self.listen_host, self.listen_port)

    @property
    def api_token(self) -> Secret:
        return self.credentials[0].token if self.credentials else Secret("")

    @property
    def account_ids(self) -> tuple[str, ...]:
        return self.credentials[0].account_ids if self.credentials else ()

    @property
    def api_rate_limit(self) -> int:
        return self.credentials[0].api_rate_limit if self.credentials else DEFAULT_RATE_LIMIT

    @property
    def api_reserve(self) -> int:
        return self.credentials[0].api_reserve if self.credentials else DEFAULT_API_RESERVE


def parse_listen_address(value: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``:9877``, ``0.0.0.0:9877``, ``[::1]:9877``) into host and port."""
    return ListenAddress()(value, BY_DEST["listen_address"].where)


class _Source:
    """The flags given, with the environment behind them: one option's value at a time."""

    def __init__(self, raw: RawOptions, env: Mapping[str, str]) -> None:
        self.raw = raw
        self.env = env

    def text(self, option: Option) -> tuple[str, str] | None:
        """The text given for ``option`` and where from (flag first), or None."""
        given = self.raw.get(option.dest)
        if given is not None and given != ():
            return given, option.flag or ""
        if option.env and self.env.get(option.env):
            return self.env[option.env], option.env
        return None

    def value(self, dest: str, default: Any = None) -> Any:
        """The parsed value of option ``dest`` (its table default, or ``default``, if unset)."""
        option = BY_DEST[dest]
        if option.kind == SWITCH:
            return bool(self.raw.get(dest))
        if option.kind == TOGGLE and self.raw.get(dest) is not None:
            return bool(self.raw.get(dest))
        found = self.text(option)
        assert option.parse is not None
        if found is None:
            value = option.default if default is None else default
            # a default written as text ("info", ":9877") is parsed like a given value
            return option.parse(value, option.where) if isinstance(value, str) else value
        return option.parse(found[0], option.where)

    def given(self, option: Option) -> bool:
        return self.text(option) is not None


def build_config(
    raw: RawOptions,
    env: Mapping[str, str],
    *,
    stderr_is_tty: bool,
    clock: Callable[[], float] = time.monotonic,
) -> Config:
    """Merge flags over environment, validate, and return a :class:`Config`.

    Raises :class:`ConfigError` with a one-line message on the first problem found (in the
    table's order). ``clock`` is the one token files check their time with.
    """
    src = _Source(raw, env)
    demo = src.value("demo")
    host, port = src.value("listen_address")
    settings: dict[str, Any] = {
        dest: src.value(dest)
        for dest in (
            "api_timeout", "max_concurrency", "analytics", "analytics_delay",
            "graphql_rate_limit", "top_objects", "web_config_file", "once", "log_level",
        )
    }  # fmt: skip
    interval = float(src.value("interval", DEMO_INTERVAL if demo else None))
    return Config(
        credentials=tuple(
            c.for_interval(interval) for c in _credentials(src, demo=demo, clock=clock)
        ),
        api_url=DEFAULT_API_URL if demo else src.value("api_url"),
        interval=interval,
        listen_host=host,
        listen_port=port,
        log_format=src.value("log_format", "console" if stderr_is_tty else "json"),
        demo=demo,
        config_file=src.value("config_file"),
        collectors=_collectors(src),
        namespace_filter=NamespaceFilter(
            include=src.value("namespace_include"), exclude=src.value("namespace_exclude")
        ),
        **settings,
    )


def _collectors(src: _Source) -> frozenset[str]:
    """The enabled groups: a ``--[no-]collector.<group>`` flag wins over the variable."""
    disabled: frozenset[str] = src.value("disabled_collectors")
    enabled = set()
    for group in GROUPS:
        flag = src.raw.get(f"collector_{group}")
        if flag if flag is not None else group not in disabled:
            enabled.add(group)
    return frozenset(enabled)


_CREDENTIAL_OPTIONS = tuple(o for o in OPTIONS if o.credential)


def _credentials(
    src: _Source, *, demo: bool, clock: Callable[[], float]
) -> tuple[Credential, ...]:
    """The credentials: none for the demo (cli adds the simulator's), the file's, or the flags'
    one. Budget flags are validated in every case, so a bad value never goes unnoticed."""
    rate_limit = src.value("api_rate_limit")
    reserve = src.value("api_reserve")
    config_file = src.value("config_file")
    if demo:
        if config_file is not None:
            raise ConfigError(f"{CONFIG_FILE} and --demo: give only one of them")
        return ()
    api_url = src.value("api_url")
    if config_file is not None:
        for option in _CREDENTIAL_OPTIONS:
            if src.raw.get(option.dest) not in (None, ()) or src.env.get(option.env or ""):
                raise ConfigError(
                    f"{CONFIG_FILE}: cannot be combined with {option.where}: "
                    "the file gives every credential's token, accounts and budget"
                )
        return tuple(
            Credential(**fields, api_url=api_url)
            for fields in load_credentials(config_file, src.env, clock=clock)
        )
    return (
        Credential(
            name=DEFAULT_CREDENTIAL,
            token=_token(src, clock),
            account_ids=_account_ids(src),
            api_rate_limit=rate_limit,
            api_reserve=reserve,
            api_url=api_url,
        ),
    )


def _token(src: _Source, clock: Callable[[], float]) -> Secret:
    # A flag of either kind beats both environment variables.
    flag, path = src.raw.get("api_token"), src.raw.get("api_token_file")
    if flag is not None and path is not None:
        raise ConfigError("--api-token and --api-token-file: give only one of them")
    if flag is not None:
        return _fixed_token(flag, "--api-token")
    if path is not None:
        return TokenFile(path, source="--api-token-file", clock=clock)
    if src.env.get("CLOUDFLARE_API_TOKEN"):
        return _fixed_token(src.env["CLOUDFLARE_API_TOKEN"], "CLOUDFLARE_API_TOKEN")
    if src.env.get("CLOUDFLARE_API_TOKEN_FILE"):
        path = src.env["CLOUDFLARE_API_TOKEN_FILE"]
        return TokenFile(path, source="CLOUDFLARE_API_TOKEN_FILE", clock=clock)
    raise ConfigError(
        "--api-token/CLOUDFLARE_API_TOKEN: an API token is required "
        "(or --api-token-file/CLOUDFLARE_API_TOKEN_FILE, or --config.file; --demo needs none)"
    )


def _fixed_token(value: str, source: str) -> Secret:
    try:
        return Secret(check_token(value))
    except Unusable as exc:  # the message describes the token, never shows it
        raise ConfigError(f"{source}: {exc}") from None


def _account_ids(src: _Source) -> tuple[str, ...]:
    option = BY_DEST["account_ids"]
    assert option.kind == LIST
    found = src.text(option)
    if found is None:
        return ()
    given, source = found
    values = list(given) if source == option.flag else str(given).split(",")
    ids: list[str] = []
    for position, value in enumerate((v.strip() for v in values), start=1):
        if not value and source == option.env:
            continue
        if not ACCOUNT_ID.fullmatch(value):
            raise ConfigError(f"{source}: {bad_account_id(value, f'value {position}')}")
        if value not in ids:
            ids.append(value)
    return tuple(ids)
