"""--web.config.file: TLS and basic auth with real clients; the server under awkward clients."""

from __future__ import annotations

import base64
import gzip
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import requests

from do_exporter.config import ConfigError
from do_exporter.server import Limits, MetricsServer
from do_exporter.webconfig import BasicAuth, WebConfig, load_web_config
from tests.ports import free_port
from tests.support import wait_until
from tests.test_cli import clean_env

PASSWORD = "s3cret-scrape-pass"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed certificate for 127.0.0.1 and localhost (made with openssl)."""
    folder = tmp_path_factory.mktemp("certs")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            str(folder / "server.key"),
            "-out",
            str(folder / "server.crt"),
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return folder


def write(folder: Path, text: str) -> str:
    path = folder / "web.yml"
    path.write_text(text)
    return str(path)


def hashed(password: str = PASSWORD) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


@pytest.fixture
def serve() -> Iterator[object]:
    servers: list[MetricsServer] = []

    def start(web: WebConfig | None = None) -> MetricsServer:
        server = MetricsServer(
            "127.0.0.1",
            0,
            metrics=lambda gz: gzip.compress(b"up 1\n") if gz else b"up 1\n",
            ready=lambda: True,
            web=web,
        )
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def test_tls_serves_to_a_verifying_client(certs: Path, serve) -> None:  # type: ignore[no-untyped-def]
    """With tls_server_config, a client that verifies the certificate gets the metrics."""
    web = load_web_config(
        write(certs, "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n")
    )
    server = serve(web)
    url = f"https://127.0.0.1:{server.port}/metrics"
    response = requests.get(url, verify=str(certs / "server.crt"), timeout=5)
    assert response.status_code == 200 and response.text == "up 1\n"
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(url, timeout=5)  # not trusted by the default store
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5)


def test_tls_min_version_13_refuses_tls12(certs: Path, serve) -> None:  # type: ignore[no-untyped-def]
    web = load_web_config(
        write(
            certs,
            "tls_server_config:\n  cert_file: server.crt\n"
            "  key_file: server.key\n  min_version: TLS13\n",
        )
    )
    server = serve(web)
    context = ssl.create_default_context(cafile=str(certs / "server.crt"))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=30) as raw,
        pytest.raises(ssl.SSLError),
    ):
        context.wrap_socket(raw, server_hostname="localhost")


def test_basic_auth_rejects_missing_and_wrong_credentials(  # type: ignore[no-untyped-def]
    tmp_path: Path, serve
) -> None:
    """Every path needs the right user and password; 401 carries WWW-Authenticate."""
    web = load_web_config(write(tmp_path, f"basic_auth_users:\n  prom: '{hashed()}'\n"))
    server = serve(web)
    base = f"http://127.0.0.1:{server.port}"
    for path in ("/metrics", "/healthz", "/"):
        missing = requests.get(base + path, timeout=5)
        assert missing.status_code == 401
        assert missing.headers["WWW-Authenticate"] == 'Basic realm="do-exporter"'
    assert requests.get(base + "/metrics", auth=("prom", "wrong"), timeout=5).status_code == 401
    assert requests.get(base + "/metrics", auth=("other", PASSWORD), timeout=5).status_code == 401
    bad_header = requests.get(base + "/metrics", headers={"Authorization": "Basic !!!"}, timeout=5)
    assert bad_header.status_code == 401
    good = requests.get(base + "/metrics", auth=("prom", PASSWORD), timeout=5)
    assert good.status_code == 200 and good.text == "up 1\n"
    again = requests.get(base + "/metrics", auth=("prom", PASSWORD), timeout=5)  # cached check
    assert again.status_code == 200


def test_tls_and_basic_auth_through_the_cli(certs: Path) -> None:
    """`--web.config.file` on the real command: HTTPS plus basic auth on the demo."""
    config = write(
        certs,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        f"basic_auth_users:\n  prom: '{hashed()}'\n",
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "do_exporter",
            "--demo",
            "--listen-address",
            f"127.0.0.1:{port}",
            "--web.config.file",
            config,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        url = f"https://127.0.0.1:{port}/metrics"

        def served() -> bool:
            assert proc.poll() is None
            try:
                response = requests.get(
                    url, auth=("prom", PASSWORD), timeout=5, verify=str(certs / "server.crt")
                )
            except requests.ConnectionError:
                return False
            return "cloudflare_durable_objects_objects{" in response.text

        wait_until(served, "metrics over TLS with basic auth")
        denied = requests.get(url, timeout=5, verify=str(certs / "server.crt"))
        assert denied.status_code == 401
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert proc.returncode == 0


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("tls_server_config: [1]\n", "must be a mapping"),
        ("tls_server_config:\n  cert_file: a.crt\n", "needs both cert_file and key_file"),
        (
            "tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n",
            "nope.crt': No such file or directory",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [x]\n",
            "unsupported tls_server_config key",
        ),
        ("http_server_config:\n  http2: false\n", "unsupported key(s) http_server_config"),
        ("basic_auth_users:\n  prom: plaintext\n", "not a bcrypt hash"),
        ("basic_auth_users: []\n", "must map user names"),
        ("a: [\n", "not valid YAML"),
        ("- 1\n", "mapping at the top level"),
    ],
)
def test_bad_web_config_is_one_clear_line(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_web_config(write(tmp_path, text))
    message = str(info.value)
    assert needle in message and "\n" not in message
    assert message.startswith("--web.config.file/DO_EXPORTER_WEB_CONFIG_FILE: ")


def test_missing_web_config_file_exits_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "do_exporter", "--demo", "--web.config.file", "/nonexistent.yml"],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(),
    )
    assert result.returncode == 2
    assert result.stderr.startswith("do-exporter: error: --web.config.file")
    assert len(result.stderr.splitlines()) == 1


def test_idle_and_stalled_connections_do_not_block_scrapes(  # type: ignore[no-untyped-def]
    certs: Path, serve
) -> None:
    """Idle plain connections and stalled TLS handshakes hold no one else up."""
    plain = serve()
    tls = serve(
        load_web_config(
            write(certs, "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n")
        )
    )
    held = []
    try:
        for port in (plain.port, tls.port):
            for _ in range(40):
                held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        assert requests.get(f"http://127.0.0.1:{plain.port}/metrics", timeout=2).status_code == 200
        response = requests.get(
            f"https://127.0.0.1:{tls.port}/metrics", timeout=2, verify=str(certs / "server.crt")
        )
        assert response.status_code == 200
    finally:
        for sock in held:
            sock.close()


def test_oversized_request_line_is_refused(serve) -> None:  # type: ignore[no-untyped-def]
    """A request line over 64 KiB gets 414, not a stuck thread or a crash."""
    server = serve()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = sock.recv(200)
    assert answer.startswith(b"HTTP/1.0 414") or answer.startswith(b"HTTP/1.1 414")
    assert requests.get(f"http://127.0.0.1:{server.port}/healthz", timeout=2).status_code == 200


def raw_get(port: int, authorization: bytes) -> bytes:
    """The status line of a GET /metrics sent with this exact Authorization value."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: " + authorization + b"\r\n\r\n"
        )
        return sock.recv(4096).split(b"\r\n", 1)[0]


def test_basic_auth_scheme_case_and_odd_values(tmp_path: Path, serve) -> None:  # type: ignore[no-untyped-def]
    """The scheme is case-insensitive; non-ASCII, non-base64 or empty values get a 401 answer
    (the connection is not dropped)."""
    web = load_web_config(write(tmp_path, f"basic_auth_users:\n  prom: '{hashed()}'\n"))
    server = serve(web)
    token = base64.b64encode(f"prom:{PASSWORD}".encode())
    for scheme in (b"Basic", b"basic", b"BASIC"):
        assert raw_get(server.port, scheme + b" " + token) == b"HTTP/1.1 200 OK"
    for value in (
        "Basic ñandú".encode("latin-1"),
        "Basic ñandú".encode(),
        b"Basic \xff\xfe",
        b"Basic",
        b"Bearer " + token,
        b"Basic " + base64.b64encode(f"prom:{PASSWORD}".encode("utf-16")),
    ):
        assert raw_get(server.port, value) == b"HTTP/1.1 401 Unauthorized", value


def test_unknown_user_costs_as_much_as_a_wrong_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both cost one bcrypt check at the configured cost (no user enumeration by timing)."""
    auth = BasicAuth({"prom": bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=8))})
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed_password: bytes) -> bool:
        calls.append(hashed_password[:7])
        return real(password, hashed_password)

    def header(user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    assert not auth.check(header("nobody", PASSWORD))
    assert not auth.check(header("prom", "wrong"))
    # One bcrypt check each, at the same cost: the work (not a timing) is what is compared.
    assert calls == [b"$2b$08$", b"$2b$08$"]


def test_passwords_longer_than_72_bytes_are_checked_as_bcrypt_hashes_them() -> None:
    """bcrypt hashes the first 72 bytes: a long password matches the hash that htpasswd or an
    older bcrypt made from it (from its first 72 bytes), instead of being always refused."""
    long_password = "p" * 70 + "ü" + "tail beyond byte 72"  # 'ü' straddles byte 72
    first_72 = long_password.encode()[:72]
    auth = BasicAuth({"prom": bcrypt.hashpw(first_72, bcrypt.gensalt(rounds=4))})

    def check(password: bytes) -> bool:
        return auth.check("Basic " + base64.b64encode(b"prom:" + password).decode())

    assert check(long_password.encode())
    assert check(first_72)
    assert not check(first_72[:71])
    assert not check(b"q" + long_password.encode()[1:])


def test_tls_keep_alive_pipelining_and_a_stalled_head(certs: Path) -> None:
    """Over TLS: two pipelined requests in one record get two answers on one connection, and
    a TLS client that stalls mid-head is answered 408 at the head timeout."""
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(certs / "server.crt", certs / "server.key")
    server = MetricsServer(
        "127.0.0.1", 0, metrics=lambda gz: b"up 1\n", ready=lambda: True,
        web=WebConfig(tls=tls), limits=Limits(head_timeout=1.0),
    )  # fmt: skip
    server.start()
    client = ssl.create_default_context(cafile=str(certs / "server.crt"))
    try:
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        with client.wrap_socket(raw, server_hostname="localhost") as conn:
            conn.sendall(b"GET /healthz HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n")
            data = b""
            while data.count(b"HTTP/1.1 200 OK") < 2 or not data.endswith(b"up 1\n"):
                chunk = conn.recv(65536)
                assert chunk, data
                data += chunk
            assert data.index(b"ok\n") < data.index(b"up 1\n")
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        with client.wrap_socket(raw, server_hostname="localhost") as stalled:
            stalled.sendall(b"GET /metrics HTTP/1.1\r\nHo")
            assert stalled.recv(4096).startswith(b"HTTP/1.1 408")
    finally:
        server.stop()


GOOD = "$2b$04$" + "a" * 21 + "e" + "b" * 31


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("$2y$10$short", "expected $2a$, $2b$ or $2y$"),
        ("$2x$04$" + GOOD[7:], "expected $2a$, $2b$ or $2y$"),
        ("$2b$4$" + GOOD[7:], "expected $2a$, $2b$ or $2y$"),
        ("$2b$04$" + GOOD[7:] + "c", "expected $2a$, $2b$ or $2y$"),
        ("$2b$04$" + GOOD[7:-1] + "!", "expected $2a$, $2b$ or $2y$"),
        ("$2b$04$" + "a" * 22 + "b" * 31, "expected $2a$, $2b$ or $2y$"),  # salt's last char
        ("$2b$\u0661\u0662$" + GOOD[7:], "expected $2a$, $2b$ or $2y$"),  # non-ASCII digits
        ("$2b$03$" + GOOD[7:], "its cost 3 is outside 4..14"),
        ("$2b$15$" + GOOD[7:], "its cost 15 is outside 4..14"),
        ("$2b$99$" + GOOD[7:], "its cost 99 is outside 4..14"),
    ],
)
def test_malformed_bcrypt_hash_is_a_config_error_naming_the_user(
    tmp_path: Path, value: str, needle: str
) -> None:
    """Validated whole at start; the message names the user and never shows the hash."""
    with pytest.raises(ConfigError) as info:
        load_web_config(write(tmp_path, f"basic_auth_users:\n  prom: '{value}'\n"))
    message = str(info.value)
    assert "the password of 'prom' is not a bcrypt hash" in message and needle in message
    assert value not in message and value[7:] not in message and "\n" not in message


@pytest.mark.parametrize("prefix", ["$2a$", "$2b$", "$2y$"])
def test_every_bcrypt_variant_is_accepted_and_checks(tmp_path: Path, prefix: str) -> None:
    value = prefix + hashed()[4:]
    web = load_web_config(write(tmp_path, f"basic_auth_users:\n  prom: '{value}'\n"))
    assert web.auth is not None
    good = "Basic " + base64.b64encode(f"prom:{PASSWORD}".encode()).decode()
    assert web.auth.check(good)


def test_start_up_runs_no_bcrypt_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dummy hash for unknown users is made without hashing, at the highest configured
    cost (validated to 4..14), so no configured hash can make start-up slow."""

    def refuse(*args: object) -> bytes:
        raise AssertionError("bcrypt work at start-up")

    monkeypatch.setattr(bcrypt, "hashpw", refuse)
    monkeypatch.setattr(bcrypt, "checkpw", refuse)
    auth = BasicAuth({"a": b"$2b$14$" + GOOD[7:].encode(), "b": GOOD.encode()})
    dummy = auth._dummy
    assert dummy.startswith(b"$2b$14$") and len(dummy) == 60
    monkeypatch.undo()
    assert not bcrypt.checkpw(b"anything", b"$2b$04$" + dummy[7:])  # well formed: no error
