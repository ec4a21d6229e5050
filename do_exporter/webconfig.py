"""``--web.config.file``: TLS and basic auth for the HTTP endpoint, in the format of the
Prometheus exporter-toolkit, so exporters are secured the way Prometheus users already know::

    tls_server_config:
      cert_file: server.crt          # relative paths: from the config file's folder
      key_file: server.key
      min_version: TLS12             # TLS12 (default) or TLS13
      client_auth_type: NoClientCert # or VerifyClientCertIfGiven, RequireAndVerifyClientCert
      client_ca_file: ca.crt         # needed for the two client-cert modes
    basic_auth_users:
      prometheus: $2y$10$...         # bcrypt hashes (htpasswd -nBC 10 "" | tr -d ':\\n')

Everything else of the toolkit's format (cipher suites, curves, HTTP/2 and header options) is
refused with a clear error rather than silently ignored. Basic auth, when set, protects every
path, as in the toolkit.

The file is read bounded (a regular file of at most 1 MiB) and parsed by :mod:`.yamlload`
(no anchors or aliases, no deep nesting); every value's type is checked before use, so any
malformed document is one :class:`ConfigError` line. Each bcrypt hash is validated whole at
start (``$2a$``/``$2b$``/``$2y$``, a two-digit cost in :data:`MIN_COST`..:data:`MAX_COST`,
53 characters of bcrypt's alphabet); a bad one is named by its user, never shown.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import ssl
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt

from . import yamlload
from .options import ConfigError
from .secrets import Unusable, read_limited

WHERE = "--web.config.file/DO_EXPORTER_WEB_CONFIG_FILE"
MAX_WEB_CONFIG_BYTES = 1024 * 1024
BCRYPT_MAX_PASSWORD = 72  # bytes of a password that bcrypt hashes
# bcrypt costs accepted (log2 rounds). 4 is bcrypt's minimum; 14 is ~1 s a check on one core
# of a current server (each cost step doubles it): a higher cost would make every failed
# login, and every unknown user, a CPU burner.
MIN_COST = 4
MAX_COST = 14
_BCRYPT_ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
# $2b$10$ + 22 characters of salt + 31 of hash; the salt's last character carries only two
# bits, so it is one of ".Oeu" (bcrypt refuses any other at check time).
_BCRYPT = re.compile(r"\$2[aby]\$([0-9]{2})\$[./A-Za-z0-9]{21}[.Oeu][./A-Za-z0-9]{31}")
_TLS_KEYS = {"cert_file", "key_file", "min_version", "client_auth_type", "client_ca_file"}
_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}


class BasicAuth:
    """Checks ``Authorization: Basic`` headers against bcrypt hashes.

    - The scheme is matched case-insensitively (RFC 9110: ``basic`` is ``Basic``); a value
      that is not base64 (non-ASCII included) is a failed check, never an error.
    - An unknown user costs one bcrypt check too, against a dummy hash of the highest
      configured cost, so the answer time does not tell which user names exist (as the
      Prometheus exporter-toolkit does). The dummy is made without running bcrypt (a random
      salt and hash of that cost), and costs are validated to 4..14 first, so no hash can
      make start-up slow.
    - bcrypt hashes only the first 72 bytes of a password (``htpasswd -B`` and older bcrypt
      libraries drop the rest silently; bcrypt>=4.1 for Python refuses longer input). A
      longer password is checked by its first 72 bytes, so it matches the hash those tools
      made from it; anything after byte 72 is not checked, whatever tool made the hash.
    - bcrypt is slow on purpose (tens of ms); a successful check is remembered (by a SHA-256
      of the header and the hash, never the password itself) so scrapes stay fast.
    """

    def __init__(self, users: dict[str, bytes]) -> None:
        self._users = {user.encode("utf-8"): hashed for user, hashed in users.items()}
        cost = max([MIN_COST, *(_cost(hashed) for hashed in users.values())])
        self._dummy = dummy_hash(min(cost, MAX_COST))
        self._good: set[bytes] = set()
        self._lock = threading.Lock()

    def check(self, header: str | None) -> bool:
        scheme, _, value = (header or "").strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(value.strip().encode("latin-1"), validate=True)
        except (ValueError, UnicodeEncodeError):  # binascii.Error is a ValueError
            return False
        user, sep, password = decoded.partition(b":")
        hashed = self._users.get(user) if sep else None
        key = b""
        if hashed is not None:
            key = hashlib.sha256(decoded + b"\0" + hashed).digest()
            with self._lock:
                if key in self._good:
                    return True
        try:
            ok = bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD], hashed or self._dummy)
        except ValueError:
            return False
        if ok and hashed is not None:
            with self._lock:
                if len(self._good) > 1024:
                    self._good.clear()
                self._good.add(key)
        return ok and hashed is not None


def dummy_hash(cost: int) -> bytes:
    """A well-formed bcrypt hash of ``cost`` that no password matches, made without bcrypt's
    work: a random salt and a random 23-byte "hash", in bcrypt's base64."""
    salt = bcrypt.gensalt(rounds=cost)  # only random bytes and formatting: no hashing
    return salt + _bcrypt_base64(secrets.token_bytes(23))


def _bcrypt_base64(data: bytes) -> bytes:
    standard = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    table = str.maketrans(standard, _BCRYPT_ALPHABET)
    return base64.b64encode(data).decode("ascii").rstrip("=").translate(table).encode("ascii")


def _cost(hashed: bytes) -> int:
    """The cost (log2 rounds) written in a bcrypt hash, ``$2b$10$...``; 0 if unreadable."""
    parts = hashed.split(b"$")
    return int(parts[2]) if len(parts) > 3 and parts[2].isdigit() and len(parts[2]) == 2 else 0


@dataclass(frozen=True)
class WebConfig:
    """What the web config file asked for: an SSL context and/or basic auth."""

    tls: ssl.SSLContext | None = None
    auth: BasicAuth | None = field(default=None, compare=False)


def load_web_config(path: str) -> WebConfig:
    """Read and validate the file; :class:`ConfigError` (one line) on any problem."""
    try:
        text = read_limited(path, MAX_WEB_CONFIG_BYTES).decode("utf-8")
        doc = yamlload.load(text)
    except Unusable as exc:
        raise ConfigError(f"{WHERE}: {exc.describe(path, 'file')}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{WHERE}: {path!r} is not UTF-8 text") from None
    except yamlload.YamlError as exc:
        raise ConfigError(f"{WHERE}: {path!r} is not valid YAML: {exc}") from None
    if doc is None:
        return WebConfig()
    if not isinstance(doc, dict):
        raise ConfigError(f"{WHERE}: {path!r} must be a mapping at the top level")
    unknown = set(map(str, doc)) - {"tls_server_config", "basic_auth_users"}
    if unknown:
        raise ConfigError(
            f"{WHERE}: unsupported key(s) {_names(unknown)} "
            "(supported: tls_server_config, basic_auth_users)"
        )
    base = Path(path).parent
    tls = _tls(doc.get("tls_server_config"), base)
    auth = _auth(doc.get("basic_auth_users"))
    return WebConfig(tls=tls, auth=auth)


def _tls(raw: Any, base: Path) -> ssl.SSLContext | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{WHERE}: tls_server_config must be a mapping")
    unknown = set(map(str, raw)) - _TLS_KEYS
    if unknown:
        raise ConfigError(f"{WHERE}: unsupported tls_server_config key(s) {_names(unknown)}")
    for key in _TLS_KEYS:
        if key in raw and not isinstance(raw[key], str):
            raise ConfigError(
                f"{WHERE}: tls_server_config.{key} must be a string, not {_kind(raw[key])}"
            )
    cert, key_file = raw.get("cert_file"), raw.get("key_file")  # strings, if given (above)
    if not cert or not key_file:
        raise ConfigError(f"{WHERE}: tls_server_config needs both cert_file and key_file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    version = raw.get("min_version", "TLS12")
    if version not in _VERSIONS:
        raise ConfigError(f"{WHERE}: min_version {_short(version)} is not TLS12 or TLS13")
    context.minimum_version = _VERSIONS[version]
    cert_path, key_path = _path(base, cert, "cert_file"), _path(base, key_file, "key_file")
    try:
        context.load_cert_chain(cert_path, key_path)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"{WHERE}: cannot load cert_file {cert_path!r} / key_file {key_path!r}: "
            f"{_reason(exc)}"
        ) from None
    mode = raw.get("client_auth_type", "NoClientCert")
    if mode not in _CLIENT_AUTH:
        raise ConfigError(
            f"{WHERE}: client_auth_type {_short(mode)} is not one of {', '.join(_CLIENT_AUTH)}"
        )
    context.verify_mode = _CLIENT_AUTH[mode]
    ca = raw.get("client_ca_file")
    if mode != "NoClientCert":
        if not ca:
            raise ConfigError(f"{WHERE}: client_auth_type {mode} needs client_ca_file")
        ca_path = _path(base, ca, "client_ca_file")
        try:
            context.load_verify_locations(ca_path)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"{WHERE}: cannot load client_ca_file {ca_path!r}: {_reason(exc)}"
            ) from None
    return context


def _auth(raw: Any) -> BasicAuth | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{WHERE}: basic_auth_users must map user names to bcrypt hashes")
    users: dict[str, bytes] = {}
    for user, hashed in raw.items():
        if not isinstance(user, str) or ":" in user or not isinstance(hashed, str):
            raise ConfigError(
                f"{WHERE}: basic_auth_users entry {_short(user)} is not user: hash"
            )
        problem = bcrypt_problem(hashed)
        if problem:  # the hash itself is never shown
            raise ConfigError(
                f"{WHERE}: the password of {_short(user)} is not a bcrypt hash: {problem}"
            )
        users[user] = hashed.encode("ascii")
    return BasicAuth(users)


def bcrypt_problem(hashed: str) -> str:
    """What is wrong with a bcrypt hash ("" if nothing), without showing it."""
    match = _BCRYPT.fullmatch(hashed)
    if match is None:
        return (
            "expected $2a$, $2b$ or $2y$, a two-digit cost, $ and 53 characters of "
            "[./A-Za-z0-9] (htpasswd -nBC 10 USER)"
        )
    cost = int(match.group(1))
    if not MIN_COST <= cost <= MAX_COST:
        return f"its cost {cost} is outside {MIN_COST}..{MAX_COST}"
    return ""


def _path(base: Path, value: str, key: str) -> str:
    """The file's path (relative to the config's folder); it must be a regular file."""
    path = str(base / value)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ConfigError(f"{WHERE}: cannot load {key} {path!r}: not a regular file")
    except OSError as exc:
        raise ConfigError(f"{WHERE}: cannot load {key} {path!r}: {exc.strerror}") from None
    return path


def _reason(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)[:200]
    return str(exc.strerror or type(exc).__name__)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


def _kind(value: object) -> str:
    kinds: dict[type, str] = {list: "a list", dict: "a mapping"}
    return kinds.get(type(value), type(value).__name__)


def _names(keys: set[str]) -> str:
    return ", ".join(sorted(k[:40] for k in keys)[:5])
