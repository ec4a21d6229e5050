"""Configuration: one frozen :class:`Config`, built once from flags and environment.

Flags win over environment variables. Every problem raises :class:`ConfigError` with a
one-line message that names the flag and its environment variable; ``cli.main()`` is the
only place that turns it into exit status 2.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_API_URL = "https://api.cloudflare.com/client/v4"
DEFAULT_INTERVAL = 300.0
DEMO_INTERVAL = 15.0
MIN_INTERVAL = 10.0
MAX_INTERVAL = 86_400.0
DEFAULT_LISTEN = ":9877"
DEFAULT_RATE_LIMIT = 1000
RATE_LIMIT_WINDOW = 300.0
MAX_RATE_LIMIT = 100_000
DEFAULT_TIMEOUT = 30.0
DEFAULT_CONCURRENCY = 64
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "console")

_ACCOUNT_ID = re.compile(r"[0-9a-f]{32}")


class ConfigError(ValueError):
    """A configuration value is missing or wrong; ``str()`` is one line for the user."""


class Secret:
    """A string that never shows itself in ``repr``, ``str`` or f-strings."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself: call this only where it is sent to the API."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the exporter needs to run, validated."""

    api_token: Secret = field(default_factory=lambda: Secret(""))
    account_ids: tuple[str, ...] = ()
    api_url: str = DEFAULT_API_URL
    interval: float = DEFAULT_INTERVAL
    listen_host: str = ""
    listen_port: int = 9877
    api_rate_limit: int = DEFAULT_RATE_LIMIT
    api_timeout: float = DEFAULT_TIMEOUT
    max_concurrency: int = DEFAULT_CONCURRENCY
    log_level: str = "info"
    log_format: str = "json"
    web_config_file: str | None = None
    once: bool = False
    demo: bool = False

    @property
    def listen_address(self) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"


@dataclass(frozen=True, slots=True)
class RawOptions:
    """What argparse gave, before environment fallbacks and validation (None = not given)."""

    api_token: str | None = field(default=None, repr=False)
    api_token_file: str | None = None
    account_ids: tuple[str, ...] = ()
    api_url: str | None = None
    interval: str | None = None
    listen_address: str | None = None
    api_rate_limit: str | None = None
    api_timeout: str | None = None
    max_concurrency: str | None = None
    log_level: str | None = None
    log_format: str | None = None
    web_config_file: str | None = None
    once: bool = False
    demo: bool = False


def build_config(raw: RawOptions, env: Mapping[str, str], *, stderr_is_tty: bool) -> Config:
    """Merge flags over environment, validate, and return a :class:`Config`.

    Raises :class:`ConfigError` with a one-line message on the first problem found.
    """

    def pick(flag_value: str | None, env_name: str) -> str | None:
        if flag_value is not None:
            return flag_value
        value = env.get(env_name)
        return value if value not in (None, "") else None

    interval_text = pick(raw.interval, "DO_EXPORTER_INTERVAL")
    if interval_text is None:
        interval = DEMO_INTERVAL if raw.demo else DEFAULT_INTERVAL
    else:
        interval = _number(
            interval_text,
            "--interval/DO_EXPORTER_INTERVAL",
            minimum=MIN_INTERVAL,
            maximum=MAX_INTERVAL,
        )

    host, port = parse_listen_address(
        pick(raw.listen_address, "DO_EXPORTER_LISTEN_ADDRESS") or DEFAULT_LISTEN
    )

    rate_text = pick(raw.api_rate_limit, "DO_EXPORTER_API_RATE_LIMIT")
    rate_limit = (
        DEFAULT_RATE_LIMIT
        if rate_text is None
        else int(
            _number(
                rate_text,
                "--api-rate-limit/DO_EXPORTER_API_RATE_LIMIT",
                minimum=1,
                maximum=MAX_RATE_LIMIT,
                integer=True,
            )
        )
    )
    timeout_text = pick(raw.api_timeout, "DO_EXPORTER_API_TIMEOUT")
    timeout = (
        DEFAULT_TIMEOUT
        if timeout_text is None
        else _number(timeout_text, "--api-timeout/DO_EXPORTER_API_TIMEOUT", minimum=1, maximum=600)
    )
    conc_text = pick(raw.max_concurrency, "DO_EXPORTER_MAX_CONCURRENCY")
    concurrency = (
        DEFAULT_CONCURRENCY
        if conc_text is None
        else int(
            _number(
                conc_text,
                "--max-concurrency/DO_EXPORTER_MAX_CONCURRENCY",
                minimum=1,
                maximum=256,
                integer=True,
            )
        )
    )

    log_level = (pick(raw.log_level, "DO_EXPORTER_LOG_LEVEL") or "info").lower()
    if log_level not in LOG_LEVELS:
        raise ConfigError(
            f"--log-level/DO_EXPORTER_LOG_LEVEL: unknown level {log_level!r} "
            f"(choose from {', '.join(LOG_LEVELS)})"
        )
    log_format = (pick(raw.log_format, "DO_EXPORTER_LOG_FORMAT") or "").lower()
    if not log_format:
        log_format = "console" if stderr_is_tty else "json"
    if log_format not in LOG_FORMATS:
        raise ConfigError(
            f"--log-format/DO_EXPORTER_LOG_FORMAT: unknown format {log_format!r} "
            f"(choose from {', '.join(LOG_FORMATS)})"
        )

    # The demo talks to the built-in simulator: API settings come from it.
    token, account_ids, api_url = Secret(""), tuple[str, ...](), DEFAULT_API_URL
    if not raw.demo:
        token = _token(raw, env)
        account_ids = _account_ids(raw, env)
        api_url = _api_url(pick(raw.api_url, "CLOUDFLARE_API_URL") or DEFAULT_API_URL)

    return Config(
        api_token=token,
        account_ids=account_ids,
        api_url=api_url,
        interval=interval,
        listen_host=host,
        listen_port=port,
        api_rate_limit=rate_limit,
        api_timeout=timeout,
        max_concurrency=concurrency,
        log_level=log_level,
        log_format=log_format,
        web_config_file=pick(raw.web_config_file, "DO_EXPORTER_WEB_CONFIG_FILE"),
        once=raw.once,
        demo=raw.demo,
    )


def _token(raw: RawOptions, env: Mapping[str, str]) -> Secret:
    # A flag of either kind beats both environment variables.
    if raw.api_token is not None and raw.api_token_file is not None:
        raise ConfigError("--api-token and --api-token-file: give only one of them")
    token: str | None
    if raw.api_token is not None:
        token, source = raw.api_token, "--api-token"
    elif raw.api_token_file is not None:
        token, source = _read_token_file(raw.api_token_file, "--api-token-file"), "--api-token-file"
    elif env.get("CLOUDFLARE_API_TOKEN"):
        token, source = env["CLOUDFLARE_API_TOKEN"], "CLOUDFLARE_API_TOKEN"
    elif env.get("CLOUDFLARE_API_TOKEN_FILE"):
        path = env["CLOUDFLARE_API_TOKEN_FILE"]
        token = _read_token_file(path, "CLOUDFLARE_API_TOKEN_FILE")
        source = "CLOUDFLARE_API_TOKEN_FILE"
    else:
        raise ConfigError(
            "--api-token/CLOUDFLARE_API_TOKEN: an API token is required "
            "(or --api-token-file/CLOUDFLARE_API_TOKEN_FILE; --demo needs none)"
        )
    token = token.strip()
    if not token:
        raise ConfigError(f"{source}: the API token is empty")
    if not all("!" <= ch <= "~" for ch in token):
        # Never echo the token: only say what is wrong with it. (HTTP headers carry ASCII.)
        raise ConfigError(
            f"{source}: the API token may hold only visible ASCII characters "
            "(no whitespace, control or non-ASCII characters)"
        )
    return Secret(token)


def _read_token_file(path: str, source: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(f"{source}: cannot read token file {path!r}: {reason}") from None


def _account_ids(raw: RawOptions, env: Mapping[str, str]) -> tuple[str, ...]:
    if raw.account_ids:
        values, source = list(raw.account_ids), "--account-id"
    else:
        values = env.get("CLOUDFLARE_ACCOUNT_ID", "").split(",")
        source = "CLOUDFLARE_ACCOUNT_ID"
    ids: list[str] = []
    for value in (v.strip() for v in values):
        if not value and source == "CLOUDFLARE_ACCOUNT_ID":
            continue
        if not _ACCOUNT_ID.fullmatch(value):
            raise ConfigError(
                f"{source}: {value!r} is not a Cloudflare account id (32 lowercase hex characters)"
            )
        if value not in ids:
            ids.append(value)
    return tuple(ids)


def _api_url(value: str) -> str:
    value = value.rstrip("/")
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
        raise ConfigError(
            f"--api-url/CLOUDFLARE_API_URL: {value!r} is not an http(s) URL "
            "(for example https://api.cloudflare.com/client/v4)"
        )
    return value


def parse_listen_address(value: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``:9877``, ``0.0.0.0:9877``, ``[::1]:9877``) into host and port."""
    where = "--listen-address/DO_EXPORTER_LISTEN_ADDRESS"
    match = re.fullmatch(r"(?:\[([0-9A-Fa-f:.]+)\]|([^\s:\[\]]*)):(\d{1,5})", value.strip())
    if not match:
        raise ConfigError(f"{where}: {value!r} is not HOST:PORT (for example :9877)")
    host = match.group(1) or match.group(2) or ""
    port = int(match.group(3))
    if not 0 < port < 65536:
        raise ConfigError(f"{where}: port {port} is out of range 1..65535")
    return host, port


def _number(
    text: str,
    where: str,
    *,
    minimum: float,
    maximum: float | None = None,
    integer: bool = False,
) -> float:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise ConfigError(f"{where}: {text!r} is not {kind}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{where}: {text!r} is not a finite number")
    if value < minimum:
        raise ConfigError(f"{where}: {text.strip()!r} is below the minimum of {minimum:g}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{where}: {text.strip()!r} is above the maximum of {maximum:g}")
    return float(value)
