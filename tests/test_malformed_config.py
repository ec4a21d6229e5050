"""Malformed --config.file and --web.config.file documents: each is one line and exit 2,
never a traceback, and nothing expands before it is refused (issue 16, item 7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from do_exporter import cli
from do_exporter.config import ConfigError, build_config
from do_exporter.options import RawOptions
from do_exporter.webconfig import load_web_config

TOKEN_VAR = {"X": "tok-a-0123456789abcdefghijklmnopqrstuvwxyz"}
DEEP = "[" * 3000 + "]" * 3000
HUGE = "1" * 5000
# A 519-byte-class "billion laughs": nine levels of ten aliases each (10**9 strings).
LAUGHS = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)
)


def one_line(argv: list[str], capsys: pytest.CaptureFixture[str], env: dict[str, str]) -> str:
    """Run the command in-process: exit status 2 and exactly one line on stderr."""
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in __import__("os").environ if n.startswith(("CLOUDFLARE_", "DO_"))]:
            mp.delenv(name)
        for name, value in env.items():
            mp.setenv(name, value)
        assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("do-exporter: error: "), err[:2000]
    assert "Traceback" not in err and len(lines[0]) < 400
    return lines[0]


CONFIG_FILE_CASES = {
    "list as key": "credentials:\n  - {[a, b]: 1}\n",
    "mapping as key": "{a: 1}: [x]\n",
    "complex key at top": "? [credentials]\n: []\n",
    "3000-deep nesting": f"credentials: {DEEP}\n",
    "5000-digit integer": f"credentials:\n  - {{name: a, token_env: X, api_rate_limit: {HUGE}}}\n",
    "aliases": LAUGHS + "credentials: *i\n",
    "anchor only": "credentials: &c\n  - {name: a, token_env: X}\n",
    "name is a list": "credentials:\n  - {name: [a], token_env: X}\n",
    "accounts is a mapping": "credentials:\n  - {name: a, token_env: X, accounts: {a: 1}}\n",
    "token_file is a number": "credentials:\n  - {name: a, token_file: 5}\n",
    "token_env is a list": "credentials:\n  - {name: a, token_env: [X]}\n",
    "rate limit is text": "credentials:\n  - {name: a, token_env: X, api_rate_limit: fast}\n",
    "rate limit is a float": "credentials:\n  - {name: a, token_env: X, api_rate_limit: 1.5}\n",
    "reserve is a bool": "credentials:\n  - {name: a, token_env: X, api_reserve: true}\n",
    "credentials is text": "credentials: many\n",
    "entry is a list": "credentials:\n  - [name, a]\n",
    "binary tag": "credentials:\n  - {name: !!binary aGk=, token_env: X}\n",
    "timestamp name": "credentials:\n  - {name: 2024-01-01, token_env: X}\n",
    "python tag": "credentials: !!python/object/apply:os.system [echo]\n",
    "several documents": "credentials: []\n---\ncredentials: []\n",
    "tab indentation": "credentials:\n\t- {name: a}\n",
}


@pytest.mark.parametrize("case", CONFIG_FILE_CASES)
def test_malformed_config_file_is_one_line_and_exit_2(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yml"
    path.write_text(CONFIG_FILE_CASES[case])
    line = one_line(["--config.file", str(path)], capsys, TOKEN_VAR)
    assert line.startswith("do-exporter: error: --config.file/DO_EXPORTER_CONFIG_FILE: ")


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("list as key", "a key must be a plain value"),
        ("3000-deep nesting", "nested deeper than 32 levels"),
        ("5000-digit integer", "more than 64 digits"),
        ("aliases", "anchors and aliases"),
        ("rate limit is a float", "must be a whole number"),
    ],
)
def test_malformed_config_file_says_what_is_wrong(case: str, needle: str, tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text(CONFIG_FILE_CASES[case])
    with pytest.raises(ConfigError, match=needle):
        build_config(RawOptions(config_file=str(path)), TOKEN_VAR, stderr_is_tty=False)


WEB_CASES = {
    "min_version is a list": "tls_server_config:\n  cert_file: a\n  key_file: b\n"
    "  min_version: [TLS12]\n",
    "client_auth_type is a mapping": "tls_server_config:\n  cert_file: a\n  key_file: b\n"
    "  client_auth_type: {a: 1}\n",
    "cert_file is a list": "tls_server_config:\n  cert_file: [a]\n  key_file: b\n",
    "deep nesting": f"tls_server_config: {DEEP}\n",
    "aliases in cert_file": LAUGHS + "tls_server_config:\n  cert_file: *i\n  key_file: b\n",
    "list as key": "basic_auth_users:\n  ? [prom]\n  : x\n",
    "mapping as top key": "{a: 1}: x\n",
    "hash is a list": "basic_auth_users:\n  prom: [x]\n",
    "user is a number": "basic_auth_users:\n  1: x\n",
    "5000-digit integer": f"basic_auth_users:\n  prom: {HUGE}\n",
    "unknown key is a number": f"{HUGE[:10]}: x\n",
    "not a mapping": "just text\n",
}


@pytest.mark.parametrize("case", WEB_CASES)
def test_malformed_web_config_is_one_line_and_exit_2(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "web.yml"
    path.write_text(WEB_CASES[case])
    line = one_line(["--demo", "--web.config.file", str(path)], capsys, {})
    assert line.startswith("do-exporter: error: --web.config.file/DO_EXPORTER_WEB_CONFIG_FILE: ")


def test_aliases_are_refused_before_anything_expands(tmp_path: Path) -> None:
    """The alias bomb is refused at its first anchor: no value is ever built from it."""
    path = tmp_path / "web.yml"
    path.write_text(WEB_CASES["aliases in cert_file"])
    assert len(path.read_bytes()) < 600
    with pytest.raises(ConfigError, match=r"line 1, column 4: YAML anchors and aliases"):
        load_web_config(str(path))


def test_web_config_that_is_a_device_is_not_read() -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        load_web_config("/dev/zero")


def test_min_version_as_a_list_names_the_value(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text(WEB_CASES["min_version is a list"])
    with pytest.raises(ConfigError, match="min_version must be a string, not a list"):
        load_web_config(str(path))
