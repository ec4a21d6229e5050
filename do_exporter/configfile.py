"""``--config.file``: several credentials from one YAML file.

The file is read bounded (a regular file of at most 1 MiB) and parsed by the bounded loader
of :mod:`.yamlload` (no aliases, no deep nesting, no huge integers, scalar keys given once);
unknown keys and every wrong type are errors naming the file, the key path
(``credentials[1].token_env``) and the problem, in one line. Relative ``token_file`` paths
start from the file's folder. A token is never inline: ``token_file`` or ``token_env`` (a
variable's name). What it returns are the fields of each :class:`~.config.Credential`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypedDict

from .options import (
    DEFAULT_API_RESERVE,
    DEFAULT_RATE_LIMIT,
    MAX_API_RESERVE,
    MAX_RATE_LIMIT,
    ConfigError,
    shown,
)
from .secrets import MIN_TOKEN_LENGTH, Secret, TokenFile, Unusable, check_token, read_limited

MAX_CONFIG_FILE_BYTES = 1024 * 1024
CONFIG_FILE = "--config.file/DO_EXPORTER_CONFIG_FILE"
ACCOUNT_ID = re.compile(r"[0-9a-f]{32}")
NOT_AN_ACCOUNT_ID = "is not a Cloudflare account id (32 lowercase hexadecimal characters)"
_CREDENTIAL_NAME = re.compile(r"[a-z0-9_-]{1,64}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def bad_account_id(value: object, label: str) -> str:
    """Why ``value`` is not an account id. It is shown only when shorter than any token (a
    token pasted in the wrong place must not land in the terminal or the logs); else
    ``label`` ("value 2") names it."""
    text = str(value) if isinstance(value, str | int | float) else ""
    if text and len(text) < MIN_TOKEN_LENGTH and text.isprintable():
        return f"{shown(text)} {NOT_AN_ACCOUNT_ID}"
    return f"{label} {NOT_AN_ACCOUNT_ID[:-1]}; value not shown)"


class CredentialFields(TypedDict):
    """One entry of the file, validated: the fields of a :class:`~.config.Credential`."""

    name: str
    token: Secret
    account_ids: tuple[str, ...]
    api_rate_limit: int
    api_reserve: int


_CREDENTIAL_KEYS = ("name", "token_file", "token_env", "accounts", "api_rate_limit", "api_reserve")


class _FileError(Exception):
    """A problem at a key path of the config file (``credentials[1].token_env``)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")


def load_credentials(
    path: str, env: Mapping[str, str], *, clock: Callable[[], float] = time.monotonic
) -> tuple[CredentialFields, ...]:
    """The credentials ``--config.file`` lists; :class:`ConfigError` names file, key, problem.

    The file is read bounded (a regular file of at most 1 MiB) and parsed with YAML's safe
    loader; unknown keys are errors. Relative ``token_file`` paths start from the file's
    folder. A token is never inline: ``token_file`` or ``token_env`` (a variable's name).
    """
    where = f"{CONFIG_FILE}: {path}"
    try:
        data = read_limited(path, MAX_CONFIG_FILE_BYTES)
    except Unusable as exc:
        raise ConfigError(f"{CONFIG_FILE}: {exc.describe(path, 'config file')}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not UTF-8 text") from None
    from . import yamlload  # PyYAML is loaded only when a file is read

    try:
        document = yamlload.load(text)
    except yamlload.YamlError as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}") from None
    base = Path(path).parent
    try:
        return _credentials(document, base, env, clock)
    except _FileError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _credentials(
    document: object, base: Path, env: Mapping[str, str], clock: Callable[[], float]
) -> tuple[CredentialFields, ...]:
    if not isinstance(document, dict):
        raise _FileError("(top level)", "must be a mapping with the key 'credentials'")
    for key in document:
        if key != "credentials":
            raise _FileError(_key(key), "unknown key (the file holds only 'credentials')")
    entries = document.get("credentials")
    if not isinstance(entries, list) or not entries:
        raise _FileError("credentials", "must be a non-empty list of credentials")
    out: list[CredentialFields] = []
    owners: dict[str, str] = {}
    for index, entry in enumerate(entries):
        credential = _credential(entry, f"credentials[{index}]", base, env, clock)
        if any(c["name"] == credential["name"] for c in out):
            raise _FileError(f"credentials[{index}].name", f"{credential['name']!r} is used twice")
        for position, account in enumerate(credential["account_ids"]):
            if account in owners:
                raise _FileError(
                    f"credentials[{index}].accounts[{position}]",
                    f"account {account} is already exported by credential {owners[account]!r}",
                )
            owners[account] = credential["name"]
        out.append(credential)
    return tuple(out)


def _credential(
    entry: object, at: str, base: Path, env: Mapping[str, str], clock: Callable[[], float]
) -> CredentialFields:
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
        except Unusable as exc:
            raise _FileError(f"{at}.token_env", f"{var}: {exc}") from None
    return CredentialFields(
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
        if not isinstance(item, str) or not ACCOUNT_ID.fullmatch(item):
            raise _FileError(f"{at}[{position}]", bad_account_id(item, "the value"))
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
