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
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from .config import ConfigError

WHERE = "--web.config.file/DO_EXPORTER_WEB_CONFIG_FILE"
BCRYPT_MAX_PASSWORD = 72  # bytes of a password that bcrypt hashes
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
    - An unknown user costs one bcrypt check too, against a hash of the same cost as the
      configured ones, so the answer time does not tell which user names exist (as the
      Prometheus exporter-toolkit does).
    - bcrypt hashes only the first 72 bytes of a password (``htpasswd -B`` and older bcrypt
      libraries drop the rest silently; bcrypt>=4.1 for Python refuses longer input). A
      longer password is checked by its first 72 bytes, so it matches the hash those tools
      made from it; anything after byte 72 is not checked, whatever tool made the hash.
    - bcrypt is slow on purpose (tens of ms); a successful check is remembered (by a SHA-256
      of the header and the hash, never the password itself) so scrapes stay fast.
    """

    def __init__(self, users: dict[str, bytes]) -> None:
        self._users = {user.encode("utf-8"): hashed for user, hashed in users.items()}
        cost = min(31, max([4, *(_cost(hashed) for hashed in users.values())]))
        self._dummy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=cost))
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
    file = Path(path)
    try:
        doc = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{WHERE}: cannot read {path!r}: {exc.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{WHERE}: {path!r} is not valid YAML: {reason}") from None
    if doc is None:
        return WebConfig()
    if not isinstance(doc, dict):
        raise ConfigError(f"{WHERE}: {path!r} must be a mapping at the top level")
    unknown = set(doc) - {"tls_server_config", "basic_auth_users"}
    if unknown:
        raise ConfigError(
            f"{WHERE}: unsupported key(s) {', '.join(sorted(map(str, unknown)))} "
            "(supported: tls_server_config, basic_auth_users)"
        )
    base = file.parent
    tls = _tls(doc.get("tls_server_config"), base)
    auth = _auth(doc.get("basic_auth_users"))
    return WebConfig(tls=tls, auth=auth)


def _tls(raw: Any, base: Path) -> ssl.SSLContext | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{WHERE}: tls_server_config must be a mapping")
    unknown = set(raw) - _TLS_KEYS
    if unknown:
        raise ConfigError(
            f"{WHERE}: unsupported tls_server_config key(s) {', '.join(sorted(map(str, unknown)))}"
        )
    cert, key = raw.get("cert_file"), raw.get("key_file")
    if not cert or not key:
        raise ConfigError(f"{WHERE}: tls_server_config needs both cert_file and key_file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    version = raw.get("min_version", "TLS12")
    if version not in _VERSIONS:
        raise ConfigError(f"{WHERE}: min_version {version!r} is not TLS12 or TLS13")
    context.minimum_version = _VERSIONS[version]
    try:
        context.load_cert_chain(_path(base, cert), _path(base, key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{WHERE}: cannot load cert_file/key_file: {_reason(exc)}") from None
    mode = raw.get("client_auth_type", "NoClientCert")
    if mode not in _CLIENT_AUTH:
        raise ConfigError(
            f"{WHERE}: client_auth_type {mode!r} is not one of {', '.join(_CLIENT_AUTH)}"
        )
    context.verify_mode = _CLIENT_AUTH[mode]
    ca = raw.get("client_ca_file")
    if mode != "NoClientCert":
        if not ca:
            raise ConfigError(f"{WHERE}: client_auth_type {mode} needs client_ca_file")
        try:
            context.load_verify_locations(_path(base, ca))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{WHERE}: cannot load client_ca_file: {_reason(exc)}") from None
    return context


def _auth(raw: Any) -> BasicAuth | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{WHERE}: basic_auth_users must map user names to bcrypt hashes")
    users: dict[str, bytes] = {}
    for user, hashed in raw.items():
        if not isinstance(user, str) or ":" in user or not isinstance(hashed, str):
            raise ConfigError(f"{WHERE}: basic_auth_users entry {user!r} is not user: hash")
        if not hashed.startswith(("$2a$", "$2b$", "$2y$")) or not 4 <= _cost(hashed.encode()) <= 31:
            raise ConfigError(f"{WHERE}: the password of {user!r} is not a bcrypt hash")
        users[user] = hashed.encode()
    return BasicAuth(users)


def _path(base: Path, value: Any) -> str:
    return str(base / str(value))


def _reason(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc.strerror)
