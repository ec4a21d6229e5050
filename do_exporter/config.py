"""Configuration: one frozen :class:`Config`, built once from flags, environment and file.

Flags win over environment variables. ``--config.file`` lists several credentials (each a
token with its own accounts and budget); without it the flags make one credential called
``default``. Every problem raises :class:`ConfigError` with a one-line message that names
the flag and its environment variable (and for the file: the file and the key); ``cli.main()``
is the only place that turns it into exit status 2.

Tokens are "token sources": :class:`Secret` (a fixed value) or :class:`TokenFile` (re-read
when its file changes). Both offer ``reveal()`` and never show the value in ``repr``/``str``.
"""

from __future__ import annotations

import os
import re
import stat
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import yaml

DEFAULT_API_URL = "https://api.cloudflare.com/client/v4"
DEFAULT_INTERVAL = 300.0
DEMO_INTERVAL = 15.0
MIN_INTERVAL = 10.0
MAX_INTERVAL = 86_400.0
DEFAULT_LISTEN = ":9877"
DEFAULT_RATE_LIMIT = 1000
RATE_LIMIT_WINDOW = 300.0
MAX_RATE_LIMIT = 100_000
# Requests per Cloudflare rate-limit window left to the user's other tools: 20% of 1,200.
DEFAULT_API_RESERVE = 240
MAX_API_RESERVE = 100_000
DEFAULT_TIMEOUT = 30.0
DEFAULT_CONCURRENCY = 64
DEFAULT_ANALYTICS_DELAY = 300.0  # Cloudflare's analytics of the last minutes are incomplete
MAX_ANALYTICS_DELAY = 3600.0
DEFAULT_GRAPHQL_RATE_LIMIT = 250  # GraphQL queries per 5 minutes; Cloudflare allows 300
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "console")

# Cloudflare API tokens are 40 characters; other kinds are accepted within these bounds.
MIN_TOKEN_LENGTH = 32
MAX_TOKEN_LENGTH = 256
MAX_TOKEN_FILE_BYTES = 4096
MAX_CONFIG_FILE_BYTES = 1024 * 1024
# How often (seconds) a token file is checked for a new token, from the code that needs it.
TOKEN_CHECK_INTERVAL = 30.0
# Old tokens stay redacted from logs after a rotation; this many are remembered.
MAX_TOKEN_HISTORY = 16
DEFAULT_CREDENTIAL = "default"
CONFIG_FILE = "--config.file/DO_EXPORTER_CONFIG_FILE"

_ACCOUNT_ID = re.compile(r"[0-9a-f]{32}")
_CREDENTIAL_NAME = re.compile(r"[a-z0-9_-]{1,64}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

log = structlog.get_logger("do_exporter.config")


class ConfigError(ValueError):
    """A configuration value is missing or wrong; ``str()`` is one line for the user."""


class Secret:
    """An API token that never shows itself in ``repr``, ``str`` or f-strings.

    The client calls :meth:`reveal` for every request; :class:`TokenFile` (a subclass)
    re-reads its file when it changes, so both are "token sources".
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself: call this only where it is sent to the API."""
        return self._value

    def reload(self) -> bool:
        """Re-read the token now (SIGHUP); a fixed token has nothing to re-read: False."""
        return False

    def known_values(self) -> tuple[str, ...]:
        """Every value this source has held: what log redaction must hide."""
        return (self._value,) if self._value else ()

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return type(other) is Secret and type(self) is Secret and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


class TokenFile(Secret):
    """A token read from a file, re-read when the file changes (secret rotation).

    Kubernetes rotates a mounted Secret by swapping a symlink, so the file is compared by
    the ``stat`` of the path it resolves to (device, inode, mtime, size), at most every
    ``check_every`` seconds of ``clock``, from :meth:`reveal` (the code that needs the
    token); :meth:`reload` (SIGHUP) re-reads at once. A re-read that fails keeps the
    current token and logs once, until a read succeeds again. The token is never logged.
    """

    __slots__ = (
        "_check_every",
        "_clock",
        "_failing",
        "_history",
        "_lock",
        "_name",
        "_next_check",
        "_signature",
        "path",
        "source",
    )

    def __init__(
        self,
        path: str,
        *,
        source: str = "--api-token-file",
        name: str = "default",
        clock: Callable[[], float] = time.monotonic,
        check_every: float = TOKEN_CHECK_INTERVAL,
    ) -> None:
        """Read the token now; raises :class:`ConfigError` (one line) if that fails."""
        self.path = path
        self.source = source
        self._name = name
        self._clock = clock
        self._check_every = check_every
        self._lock = threading.Lock()
        try:
            signature, value = self._read()
        except _Unusable as exc:
            raise ConfigError(f"{source}: {exc.describe(path)}") from None
        super().__init__(value)
        self._signature = signature
        self._history: tuple[str, ...] = (value,)
        self._next_check = clock() + check_every
        self._failing = False

    def reveal(self) -> str:
        """The current token; re-reads the file first if a check is due and it changed."""
        now = self._clock()
        with self._lock:
            due = now >= self._next_check
            if due:  # this caller checks; the others go on with the current token
                self._next_check = now + self._check_every
        if due:
            self._refresh(forced=False)
        return self._value

    def reload(self) -> bool:
        """Re-read the file now (SIGHUP), changed or not; True if the token changed."""
        with self._lock:
            self._next_check = self._clock() + self._check_every
        return self._refresh(forced=True)

    def known_values(self) -> tuple[str, ...]:
        return self._history

    def __repr__(self) -> str:
        return f"TokenFile({self.path!r}, token='**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return other is self

    def __hash__(self) -> int:
        return id(self)

    def _read(self) -> tuple[tuple[int, int, int, int], str]:
        # Stat first: a change made while reading shows up as a new signature next time.
        signature = _signature(self.path)
        data = read_limited(self.path, MAX_TOKEN_FILE_BYTES)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise _Unusable("not UTF-8 text", unreadable=True) from None
        return signature, check_token(text)

    def _refresh(self, *, forced: bool) -> bool:
        where = {"credential": self._name, "source": self.source, "path": self.path}
        try:
            if not forced and _signature(self.path) == self._signature:
                return False
            signature, value = self._read()
        except _Unusable as exc:
            with self._lock:
                first, self._failing = not self._failing, True
            if first or forced:
                log.warning(
                    "API token re-read failed; keeping the current token",
                    reason=exc.describe(self.path),
                    **where,
                )
            return False
        with self._lock:
            self._failing = False
            self._signature = signature
            changed = value != self._value
            if changed:
                self._history = (*self._history[-(MAX_TOKEN_HISTORY - 1) :], value)
                self._value = value
        if changed:
            log.info("API token reloaded", **where)
        elif forced:
            log.info("API token file re-read: unchanged", **where)
        return changed


class _Unusable(Exception):
    """A file or value cannot be used; ``str()`` says why, never showing the contents."""

    def __init__(self, reason: str, *, unreadable: bool = False) -> None:
        super().__init__(reason)
        self.unreadable = unreadable

    def describe(self, path: str, what: str = "token file") -> str:
        return f"cannot read {what} {path!r}: {self}" if self.unreadable else str(self)


def _signature(path: str) -> tuple[int, int, int, int]:
    try:
        st = os.stat(path)  # follows symlinks: the file the path resolves to now
    except OSError as exc:
        raise _Unusable(exc.strerror or type(exc).__name__, unreadable=True) from None
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


def read_limited(path: str, limit: int) -> bytes:
    """A regular file's bytes, at most ``limit`` of them; raises :class:`_Unusable`.

    ``stat`` before ``open`` and a non-blocking open: a FIFO, a device such as
    ``/dev/zero`` or a directory is refused without being opened or read.
    """
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise _Unusable("not a regular file", unreadable=True)
        if st.st_size > limit:
            raise _Unusable(f"larger than {_size(limit)}", unreadable=True)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped since the stat
                raise _Unusable("not a regular file", unreadable=True)
            chunks: list[bytes] = []
            size = 0
            while size <= limit:
                chunk = os.read(fd, limit + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        finally:
            os.close(fd)
    except OSError as exc:
        raise _Unusable(exc.strerror or type(exc).__name__, unreadable=True) from None
    if size > limit:  # it grew since the stat
        raise _Unusable(f"larger than {_size(limit)}", unreadable=True)
    return b"".join(chunks)


def _size(limit: int) -> str:
    return f"{limit // 1024} KiB" if limit < 1024 * 1024 else f"{limit // (1024 * 1024)} MiB"


def check_token(text: str) -> str:
    """The token in ``text`` (surrounding whitespace dropped), or :class:`_Unusable`.

    Cloudflare API tokens are 40 characters of ``[A-Za-z0-9_-]``; 32..256 visible ASCII
    characters are accepted so other token kinds work. A shorter value is refused: log
    redaction replaces the token wherever it appears, which is only safe for long values.
    The message never shows the value.
    """
    token = text.strip()
    if not token:
        raise _Unusable("the API token is empty")
    if not all("!" <= ch <= "~" for ch in token):
        raise _Unusable(
            "the API token may hold only visible ASCII characters "
            "(no whitespace, control or non-ASCII characters)"
        )
    if not MIN_TOKEN_LENGTH <= len(token) <= MAX_TOKEN_LENGTH:
        raise _Unusable(
            f"the API token is not {MIN_TOKEN_LENGTH}..{MAX_TOKEN_LENGTH} characters long "
            "(Cloudflare API tokens are 40)"
        )
    return token


@dataclass(frozen=True, slots=True)
class Credential:
    """One API token with its accounts and its budget (one per ``--config.file`` entry).

    ``name`` (never the token) labels the per-budget self-metrics. ``account_ids`` empty:
    every account the token can read. ``api_rate_limit``: most requests per 5 minutes for
    this token; ``api_reserve``: requests per Cloudflare window left to the user's other tools.
    """

    name: str
    token: Secret
    account_ids: tuple[str, ...] = ()
    api_rate_limit: int = DEFAULT_RATE_LIMIT
    api_reserve: int = DEFAULT_API_RESERVE


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the exporter needs to run, validated.

    ``credentials`` is the whole truth about tokens. ``api_token``, ``account_ids``,
    ``api_rate_limit`` and ``api_reserve`` are the first credential's (the flags' when
    there is no config file), kept for code that handles one token.
    """

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
    api_reserve: int = DEFAULT_API_RESERVE
    credentials: tuple[Credential, ...] = ()
    config_file: str | None = None
    analytics: bool = True
    analytics_delay: float = DEFAULT_ANALYTICS_DELAY
    graphql_rate_limit: int = DEFAULT_GRAPHQL_RATE_LIMIT

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
    api_reserve: str | None = None
    config_file: str | None = None
    analytics: bool | None = None
    analytics_delay: str | None = None
    graphql_rate_limit: str | None = None


# Flags that describe the one credential; with --config.file the file says all of it.
_CREDENTIAL_FLAGS = (
    ("api_token", "--api-token", "CLOUDFLARE_API_TOKEN"),
    ("api_token_file", "--api-token-file", "CLOUDFLARE_API_TOKEN_FILE"),
    ("account_ids", "--account-id", "CLOUDFLARE_ACCOUNT_ID"),
    ("api_rate_limit", "--api-rate-limit", "DO_EXPORTER_API_RATE_LIMIT"),
    ("api_reserve", "--api-reserve", "DO_EXPORTER_API_RESERVE"),
)


def build_config(
    raw: RawOptions,
    env: Mapping[str, str],
    *,
    stderr_is_tty: bool,
    clock: Callable[[], float] = time.monotonic,
) -> Config:
    """Merge flags over environment, validate, and return a :class:`Config`.

    Raises :class:`ConfigError` with a one-line message on the first problem found.
    ``clock`` is the one token files check their time with.
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
    reserve_text = pick(raw.api_reserve, "DO_EXPORTER_API_RESERVE")
    reserve = (
        DEFAULT_API_RESERVE
        if reserve_text is None
        else int(
            _number(
                reserve_text,
                "--api-reserve/DO_EXPORTER_API_RESERVE",
                minimum=0,
                maximum=MAX_API_RESERVE,
                integer=True,
            )
        )
    )
    analytics_on = raw.analytics
    if analytics_on is None:
        analytics_on = _boolean(
            pick(None, "DO_EXPORTER_ANALYTICS"), "--analytics/DO_EXPORTER_ANALYTICS"
        )
    delay_text = pick(raw.analytics_delay, "DO_EXPORTER_ANALYTICS_DELAY")
    analytics_delay = (
        DEFAULT_ANALYTICS_DELAY
        if delay_text is None
        else _number(
            delay_text,
            "--analytics-delay/DO_EXPORTER_ANALYTICS_DELAY",
            minimum=0,
            maximum=MAX_ANALYTICS_DELAY,
        )
    )
    graphql_text = pick(raw.graphql_rate_limit, "DO_EXPORTER_GRAPHQL_RATE_LIMIT")
    graphql_rate_limit = (
        DEFAULT_GRAPHQL_RATE_LIMIT
        if graphql_text is None
        else int(
            _number(
                graphql_text,
                "--graphql-rate-limit/DO_EXPORTER_GRAPHQL_RATE_LIMIT",
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

    config_file = pick(raw.config_file, "DO_EXPORTER_CONFIG_FILE")
    # The demo talks to the built-in simulator: API settings come from it.
    credentials: tuple[Credential, ...] = ()
    api_url = DEFAULT_API_URL
    if raw.demo:
        if config_file is not None:
            raise ConfigError(f"{CONFIG_FILE} and --demo: give only one of them")
    else:
        api_url = _api_url(pick(raw.api_url, "CLOUDFLARE_API_URL") or DEFAULT_API_URL)
        if config_file is not None:
            for attr, flag, env_name in _CREDENTIAL_FLAGS:
                if getattr(raw, attr) or env.get(env_name):
                    raise ConfigError(
                        f"{CONFIG_FILE}: cannot be combined with {flag}/{env_name}: "
                        "the file gives every credential's token, accounts and budget"
                    )
            credentials = load_credentials(config_file, env, clock=clock)
        else:
            credentials = (
                Credential(
                    name=DEFAULT_CREDENTIAL,
                    token=_token(raw, env, clock),
                    account_ids=_account_ids(raw, env),
                    api_rate_limit=rate_limit,
                    api_reserve=reserve,
                ),
            )
    first = credentials[0] if credentials else None

    return Config(
        api_token=first.token if first else Secret(""),
        account_ids=first.account_ids if first else (),
        api_url=api_url,
        interval=interval,
        listen_host=host,
        listen_port=port,
        api_rate_limit=first.api_rate_limit if first else rate_limit,
        api_timeout=timeout,
        max_concurrency=concurrency,
        log_level=log_level,
        log_format=log_format,
        web_config_file=pick(raw.web_config_file, "DO_EXPORTER_WEB_CONFIG_FILE"),
        once=raw.once,
        demo=raw.demo,
        api_reserve=first.api_reserve if first else reserve,
        credentials=credentials,
        config_file=config_file,
        analytics=analytics_on,
        analytics_delay=analytics_delay,
        graphql_rate_limit=graphql_rate_limit,
    )


def _boolean(text: str | None, what: str) -> bool:
    """An on/off environment value (unset: on)."""
    if text is None:
        return True
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{what}: {text[:20]!r} is not true or false")


def _token(raw: RawOptions, env: Mapping[str, str], clock: Callable[[], float]) -> Secret:
    # A flag of either kind beats both environment variables.
    if raw.api_token is not None and raw.api_token_file is not None:
        raise ConfigError("--api-token and --api-token-file: give only one of them")
    if raw.api_token is not None:
        return _fixed_token(raw.api_token, "--api-token")
    if raw.api_token_file is not None:
        return TokenFile(raw.api_token_file, source="--api-token-file", clock=clock)
    if env.get("CLOUDFLARE_API_TOKEN"):
        return _fixed_token(env["CLOUDFLARE_API_TOKEN"], "CLOUDFLARE_API_TOKEN")
    if env.get("CLOUDFLARE_API_TOKEN_FILE"):
        path = env["CLOUDFLARE_API_TOKEN_FILE"]
        return TokenFile(path, source="CLOUDFLARE_API_TOKEN_FILE", clock=clock)
    raise ConfigError(
        "--api-token/CLOUDFLARE_API_TOKEN: an API token is required "
        "(or --api-token-file/CLOUDFLARE_API_TOKEN_FILE, or --config.file; --demo needs none)"
    )


def _fixed_token(value: str, source: str) -> Secret:
    try:
        return Secret(check_token(value))
    except _Unusable as exc:  # the message describes the token, never shows it
        raise ConfigError(f"{source}: {exc}") from None


def _account_ids(raw: RawOptions, env: Mapping[str, str]) -> tuple[str, ...]:
    if raw.account_ids:
        values, source = list(raw.account_ids), "--account-id"
    else:
        values = env.get("CLOUDFLARE_ACCOUNT_ID", "").split(",")
        source = "CLOUDFLARE_ACCOUNT_ID"
    ids: list[str] = []
    for position, value in enumerate((v.strip() for v in values), start=1):
        if not value and source == "CLOUDFLARE_ACCOUNT_ID":
            continue
        if not _ACCOUNT_ID.fullmatch(value):
            # Never echo it: a token pasted here by mistake would land in the terminal and logs.
            raise ConfigError(f"{source}: value {position} {_NOT_AN_ACCOUNT_ID}")
        if value not in ids:
            ids.append(value)
    return tuple(ids)


_NOT_AN_ACCOUNT_ID = (
    "is not a Cloudflare account id: not 32 lowercase hex characters (value not shown)"
)


# -- --config.file ------------------------------------------------------------------------

_CREDENTIAL_KEYS = ("name", "token_file", "token_env", "accounts", "api_rate_limit", "api_reserve")


class _FileError(Exception):
    """A problem at a key path of the config file (``credentials[1].token_env``)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (it keeps the last)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} given twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _unique_mapping,
)


def load_credentials(
    path: str, env: Mapping[str, str], *, clock: Callable[[], float] = time.monotonic
) -> tuple[Credential, ...]:
    """The credentials ``--config.file`` lists; :class:`ConfigError` names file, key, problem.

    The file is read bounded (a regular file of at most 1 MiB) and parsed with YAML's safe
    loader; unknown keys are errors. Relative ``token_file`` paths start from the file's
    folder. A token is never inline: ``token_file`` or ``token_env`` (a variable's name).
    """
    where = f"{CONFIG_FILE}: {path}"
    try:
        data = read_limited(path, MAX_CONFIG_FILE_BYTES)
    except _Unusable as exc:
        raise ConfigError(f"{CONFIG_FILE}: {exc.describe(path, 'config file')}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not UTF-8 text") from None
    try:
        document = yaml.load(text, Loader=_UniqueKeyLoader)  # a safe loader (subclass)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {_yaml_problem(exc)}") from None
    base = Path(path).parent
    try:
        return _credentials(document, base, env, clock)
    except _FileError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(str(exc.problem or exc.context or "syntax error").split())
        if mark is not None:
            return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
        return problem
    return type(exc).__name__


def _credentials(
    document: object, base: Path, env: Mapping[str, str], clock: Callable[[], float]
) -> tuple[Credential, ...]:
    if not isinstance(document, dict):
        raise _FileError("(top level)", "must be a mapping with the key 'credentials'")
    for key in document:
        if key != "credentials":
            raise _FileError(_key(key), "unknown key (the file holds only 'credentials')")
    entries = document.get("credentials")
    if not isinstance(entries, list) or not entries:
        raise _FileError("credentials", "must be a non-empty list of credentials")
    out: list[Credential] = []
    owners: dict[str, str] = {}
    for index, entry in enumerate(entries):
        credential = _credential(entry, f"credentials[{index}]", base, env, clock)
        if any(c.name == credential.name for c in out):
            raise _FileError(f"credentials[{index}].name", f"{credential.name!r} is used twice")
        for position, account in enumerate(credential.account_ids):
            if account in owners:
                raise _FileError(
                    f"credentials[{index}].accounts[{position}]",
                    f"account {account} is already exported by credential {owners[account]!r}",
                )
            owners[account] = credential.name
        out.append(credential)
    return tuple(out)


def _credential(
    entry: object, at: str, base: Path, env: Mapping[str, str], clock: Callable[[], float]
) -> Credential:
    if not isinstance(entry, dict):
        raise _FileError(at, "must be a mapping (name, token_file or token_env, ...)")
    for key in entry:
        if key == "token":
            raise _FileError(
                f"{at}.token",
                "a token is never written in the file: use token_file (a path) "
                "or token_env (the name of an environment variable)",
            )
        if key not in _CREDENTIAL_KEYS:
            raise _FileError(
                f"{at}.{_key(key)}", f"unknown key (known: {', '.join(_CREDENTIAL_KEYS)})"
            )
    name = entry.get("name")
    if not isinstance(name, str) or not _CREDENTIAL_NAME.fullmatch(name):
        raise _FileError(f"{at}.name", "required: 1 to 64 characters of a-z, 0-9, _ and -")
    has_file, has_env = "token_file" in entry, "token_env" in entry
    if has_file == has_env:
        raise _FileError(at, "give exactly one of token_file and token_env")
    token: Secret
    if has_file:
        value = entry["token_file"]
        if not isinstance(value, str) or not value:
            raise _FileError(f"{at}.token_file", "must be a path")
        token_path = str(base / value)
        try:
            token = TokenFile(token_path, source=f"{at}.token_file", name=name, clock=clock)
        except ConfigError as exc:  # already "<at>.token_file: <problem>"
            raise _FileError(f"{at}.token_file", str(exc).partition(": ")[2]) from None
    else:
        var = entry["token_env"]
        if not isinstance(var, str) or not _ENV_NAME.fullmatch(var):
            raise _FileError(
                f"{at}.token_env", "must be the name of an environment variable (CF_TOKEN_A)"
            )
        if not env.get(var):
            raise _FileError(f"{at}.token_env", f"the environment variable {var} is not set")
        try:
            token = Secret(check_token(env[var]))
        except _Unusable as exc:
            raise _FileError(f"{at}.token_env", f"{var}: {exc}") from None
    return Credential(
        name=name,
        token=token,
        account_ids=_file_accounts(entry.get("accounts"), f"{at}.accounts"),
        api_rate_limit=_file_int(
            entry, "api_rate_limit", at, DEFAULT_RATE_LIMIT, 1, MAX_RATE_LIMIT
        ),
        api_reserve=_file_int(entry, "api_reserve", at, DEFAULT_API_RESERVE, 0, MAX_API_RESERVE),
    )


def _file_accounts(value: object, at: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _FileError(at, "must be a list of account ids")
    ids: list[str] = []
    for position, item in enumerate(value):
        if not isinstance(item, str) or not _ACCOUNT_ID.fullmatch(item):
            raise _FileError(f"{at}[{position}]", _NOT_AN_ACCOUNT_ID)
        if item not in ids:
            ids.append(item)
    return tuple(ids)


def _file_int(
    entry: dict[Any, Any], key: str, at: str, default: int, minimum: int, maximum: int
) -> int:
    if key not in entry:
        return default
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise _FileError(f"{at}.{key}", f"must be a whole number {minimum}..{maximum}")
    if not minimum <= value <= maximum:
        raise _FileError(f"{at}.{key}", f"{value} is out of range {minimum}..{maximum}")
    return value


def _key(key: object) -> str:
    """A key for a message: short, one line (the file is the user's own, not a secret)."""
    text = str(key)
    return text if re.fullmatch(r"[\w.-]{1,64}", text) else repr(text[:64])


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
    where = "--web.listen-address/DO_EXPORTER_LISTEN_ADDRESS"
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
