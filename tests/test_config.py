"""Configuration: flags over environment, defaults, and one test per kind of bad value."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from do_exporter.cli import parse_options
from do_exporter.config import Config, ConfigError, Secret, build_config, format_address
from do_exporter.metrics.groups import GROUPS
from do_exporter.model import Namespace
from do_exporter.nsfilter import NamespaceFilter

ACC1 = "0123456789abcdef0123456789abcdef"
ACC2 = "fedcba9876543210fedcba9876543210"
# 40 characters of [A-Za-z0-9_-], like Cloudflare's API tokens.
TOK = "tok-0123456789abcdefghijklmnopqrstuvwxyz0"[:40]
ENVTOK = "env-" + TOK[4:]
FLAGTOK = "flg-" + TOK[4:]
FILETOK = "fil-" + TOK[4:]
SECRETTOK = "supersecret-value-" + TOK[18:]


def config(argv: list[str], env: dict[str, str] | None = None, *, tty: bool = False) -> Config:
    return build_config(parse_options(argv), env or {}, stderr_is_tty=tty)


def error(argv: list[str], env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        config(argv, env)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_follow_the_contract() -> None:
    """With only a token, every other setting takes the documented default."""
    cfg = config(["--api-token", TOK])
    assert cfg.api_token == Secret(TOK)
    assert cfg.account_ids == ()
    assert cfg.api_url == "https://api.cloudflare.com/client/v4"
    assert cfg.interval == 300
    assert (cfg.listen_host, cfg.listen_port) == ("", 9877)
    assert cfg.api_rate_limit == 1000
    assert cfg.log_level == "info"
    assert cfg.log_format == "json"
    assert not cfg.once and not cfg.demo


def test_log_format_defaults_to_console_on_a_terminal() -> None:
    """Console logs for a person at a terminal, JSON for everything else."""
    assert config(["--api-token", TOK], tty=True).log_format == "console"


def test_environment_supplies_every_setting() -> None:
    """Each documented variable sets its value when the flag is absent."""
    env = {
        "CLOUDFLARE_API_TOKEN": ENVTOK,
        "CLOUDFLARE_ACCOUNT_ID": f"{ACC1}, {ACC2},",
        "CLOUDFLARE_API_URL": "http://127.0.0.1:8080/client/v4/",
        "DO_EXPORTER_INTERVAL": "60",
        "DO_EXPORTER_LISTEN_ADDRESS": "127.0.0.1:9100",
        "DO_EXPORTER_API_RATE_LIMIT": "600",
        "DO_EXPORTER_LOG_LEVEL": "DEBUG",
        "DO_EXPORTER_LOG_FORMAT": "console",
        "DO_EXPORTER_API_TIMEOUT": "12",
        "DO_EXPORTER_MAX_CONCURRENCY": "4",
    }
    cfg = config([], env)
    assert cfg.api_token.reveal() == ENVTOK
    assert cfg.account_ids == (ACC1, ACC2)
    assert cfg.api_url == "http://127.0.0.1:8080/client/v4"
    assert cfg.interval == 60
    assert (cfg.listen_host, cfg.listen_port) == ("127.0.0.1", 9100)
    assert cfg.api_rate_limit == 600
    assert cfg.log_level == "debug"
    assert cfg.log_format == "console"
    assert cfg.api_timeout == 12
    assert cfg.max_concurrency == 4


def test_flags_win_over_environment() -> None:
    """A flag beats its environment variable."""
    env = {
        "CLOUDFLARE_API_TOKEN": ENVTOK,
        "DO_EXPORTER_INTERVAL": "60",
        "CLOUDFLARE_ACCOUNT_ID": ACC2,
    }
    cfg = config(["--api-token", FLAGTOK, "--interval", "30", "--account-id", ACC1], env)
    assert cfg.api_token.reveal() == FLAGTOK
    assert cfg.interval == 30
    assert cfg.account_ids == (ACC1,)


def test_account_id_flag_repeats_and_deduplicates() -> None:
    """--account-id may be given several times; duplicates collapse."""
    cfg = config(
        ["--api-token", TOK, "--account-id", ACC1, "--account-id", ACC2, "--account-id", ACC1]
    )
    assert cfg.account_ids == (ACC1, ACC2)


def test_token_file_is_read_and_stripped(tmp_path: Path) -> None:
    """The token file's trailing newline (as editors and kubectl write it) is dropped."""
    path = tmp_path / "token"
    path.write_text(FILETOK + "\n")
    assert config(["--api-token-file", str(path)]).api_token.reveal() == FILETOK
    assert config([], {"CLOUDFLARE_API_TOKEN_FILE": str(path)}).api_token.reveal() == FILETOK


def test_demo_needs_no_token_and_polls_faster() -> None:
    """--demo runs without credentials and defaults to a short interval."""
    cfg = config(["--demo"])
    assert cfg.demo and cfg.interval == 15


@pytest.mark.parametrize(
    ("value", "host", "port"),
    [
        (":9877", "", 9877),
        ("0.0.0.0:1", "0.0.0.0", 1),
        ("[::1]:9100", "::1", 9100),
        ("localhost:65535", "localhost", 65535),
    ],
)
def test_listen_address_forms(value: str, host: str, port: int) -> None:
    """HOST:PORT with an empty host, IPv4, bracketed IPv6 or a name."""
    cfg = config(["--api-token", TOK, "--listen-address", value])
    assert (cfg.listen_host, cfg.listen_port) == (host, port)


def test_repr_never_shows_the_token() -> None:
    """repr and str of the config hide the token."""
    cfg = config(["--api-token", SECRETTOK])
    assert SECRETTOK not in repr(cfg)
    assert SECRETTOK not in str(cfg)
    assert SECRETTOK not in f"{cfg.api_token}"


# -- one case per failure ---------------------------------------------------------------


def test_missing_token() -> None:
    assert "--api-token/CLOUDFLARE_API_TOKEN" in error([])


def test_empty_token_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("\n")
    assert "empty" in error(["--api-token-file", str(path)])


def test_unreadable_token_file(tmp_path: Path) -> None:
    message = error(["--api-token-file", str(tmp_path / "missing")])
    assert message.startswith("--api-token-file: cannot read token file")
    assert "No such file" in message


def test_token_and_token_file_together(tmp_path: Path) -> None:
    assert "only one" in error(["--api-token", TOK, "--api-token-file", str(tmp_path)])


@pytest.mark.parametrize("token", ["abc def", "abc\tdef", "abc€def", "abc\x00def"])
def test_token_with_unusable_characters_is_refused_without_echoing_it(token: str) -> None:
    message = error(["--api-token", token])
    assert "visible ASCII" in message and "abc" not in message


def test_raw_options_repr_hides_the_token() -> None:
    assert "tok-secret" not in repr(parse_options(["--api-token", "tok-secret"]))


def test_interval_above_a_day() -> None:
    assert "above the maximum of 86400" in error(["--api-token", TOK, "--interval", "1e15"])


def test_malformed_account_id() -> None:
    """A short wrong value (shorter than any token) is quoted as the user typed it."""
    message = error(["--api-token", TOK, "--account-id", "1"])
    assert message == (
        '--account-id: "1" is not a Cloudflare account id (32 lowercase hexadecimal characters)'
    )


def test_malformed_account_id_from_env() -> None:
    message = error([], {"CLOUDFLARE_API_TOKEN": TOK, "CLOUDFLARE_ACCOUNT_ID": f"{ACC1},xyz"})
    assert message.startswith('CLOUDFLARE_ACCOUNT_ID: "xyz" is not a Cloudflare account id')


def test_token_given_as_account_id_is_not_echoed() -> None:
    """A token pasted into --account-id by mistake stays out of the error message."""
    message = error(["--api-token", TOK, "--account-id", ACC1, "--account-id", SECRETTOK])
    assert SECRETTOK not in message and SECRETTOK[20:] not in message
    assert message.startswith("--account-id: value 2 is not a Cloudflare account id")
    assert "value not shown)" in message


@pytest.mark.parametrize("value", ["9", "0", "-5"])
def test_interval_below_ten_seconds(value: str) -> None:
    assert "below the minimum of 10" in error(["--api-token", TOK, "--interval", value])


@pytest.mark.parametrize("value", ["soon", "nan", "inf"])
def test_interval_not_a_number(value: str) -> None:
    assert "--interval/DO_EXPORTER_INTERVAL" in error(["--api-token", TOK, "--interval", value])


@pytest.mark.parametrize("value", ["9877", "host", ":0", ":70000", "[::1:9", "a b:1"])
def test_bad_listen_address(value: str) -> None:
    message = error(["--api-token", TOK, "--listen-address", value])
    assert message.startswith("--web.listen-address/DO_EXPORTER_LISTEN_ADDRESS")


def test_unknown_log_level() -> None:
    assert "unknown level 'loud'" in error(["--api-token", TOK, "--log-level", "loud"])


def test_unknown_log_format() -> None:
    assert "unknown format 'xml'" in error(["--api-token", TOK, "--log-format", "xml"])


@pytest.mark.parametrize("value", ["0", "1.5", "100001"])
def test_bad_rate_limit(value: str) -> None:
    assert "--api-rate-limit" in error(["--api-token", TOK, "--api-rate-limit", value])


def test_bad_api_url() -> None:
    assert "is not an http(s) URL" in error(["--api-token", TOK, "--api-url", "ftp://x"])


def test_api_reserve_default_env_and_flag() -> None:
    """--api-reserve: 240 by default (20% of 1,200), from its variable, the flag wins."""
    assert config(["--api-token", TOK]).api_reserve == 240
    env = {"DO_EXPORTER_API_RESERVE": "100"}
    assert config(["--api-token", TOK], env).api_reserve == 100
    assert config(["--api-token", TOK, "--api-reserve", "0"], env).api_reserve == 0
    assert config(["--api-token", TOK, "--api-reserve", "0"]).credentials[0].api_reserve == 0


@pytest.mark.parametrize("value", ["-1", "100001", "1.5", "some"])
def test_bad_api_reserve(value: str) -> None:
    message = error(["--api-token", TOK, "--api-reserve", value])
    assert message.startswith("--api-reserve/DO_EXPORTER_API_RESERVE: ")


def test_web_listen_address_and_its_old_spelling() -> None:
    """--web.listen-address is the spelling; --listen-address still works."""
    new = config(["--api-token", TOK, "--web.listen-address", "127.0.0.1:9100"])
    old = config(["--api-token", TOK, "--listen-address", "127.0.0.1:9100"])
    assert (new.listen_host, new.listen_port) == (old.listen_host, old.listen_port)
    assert (new.listen_host, new.listen_port) == ("127.0.0.1", 9100)


def test_help_shows_only_the_new_listen_spelling() -> None:
    from do_exporter.cli import build_parser

    text = build_parser().format_help()
    assert "--web.listen-address" in text
    assert " --listen-address" not in text and "[--listen-address" not in text


@pytest.mark.parametrize("length", [1, 31, 257])
def test_implausible_token_length(length: int) -> None:
    """A token outside 32..256 characters is refused, and not shown."""
    message = error(["--api-token", "k" * length])
    assert "not 32..256 characters long" in message and "kkkk" not in message


@pytest.mark.parametrize("source", ["flag", "env"])
def test_token_file_that_is_a_device(source: str) -> None:
    """/dev/zero is refused without being read, by flag or variable."""
    if source == "flag":
        message = error(["--api-token-file", "/dev/zero"])
    else:
        message = error([], {"CLOUDFLARE_API_TOKEN_FILE": "/dev/zero"})
    assert message.endswith("cannot read token file '/dev/zero': not a regular file")


@pytest.mark.parametrize(
    ("host", "port", "shown"),
    [("", 9877, "0.0.0.0:9877"), ("::1", 19881, "[::1]:19881"), ("127.0.0.1", 1, "127.0.0.1:1")],
)
def test_listen_address_is_logged_as_a_user_writes_it(host: str, port: int, shown: str) -> None:
    """An IPv6 address needs brackets: "[::1]:19881", never "::1:19881"."""
    assert format_address(host, port) == shown
    typed = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    assert config(["--api-token", TOK, "--web.listen-address", typed]).listen_address == shown


# -- the options of round 3 -------------------------------------------------------------


def test_new_options_default() -> None:
    cfg = config(["--api-token", TOK])
    assert cfg.top_objects == 10
    assert cfg.collectors == frozenset(GROUPS)
    assert cfg.namespace_filter == NamespaceFilter()


def test_top_objects_flag_env_and_bounds() -> None:
    assert config(["--api-token", TOK, "--top-objects", "0"]).top_objects == 0
    assert config(["--api-token", TOK], {"DO_EXPORTER_TOP_OBJECTS": "100"}).top_objects == 100
    message = error(["--api-token", TOK, "--top-objects", "101"])
    assert message == '--top-objects/DO_EXPORTER_TOP_OBJECTS: "101" is above the maximum of 100'


def test_collectors_turn_off_by_flag_or_env_and_flags_win() -> None:
    cfg = config(["--api-token", TOK, "--no-collector.latency", "--no-collector.hot_objects"])
    assert cfg.collectors == frozenset(GROUPS) - {"latency", "hot_objects"}
    env = {"DO_EXPORTER_DISABLED_COLLECTORS": "hot_objects, latency,"}
    assert config(["--api-token", TOK], env).collectors == frozenset(GROUPS) - {
        "latency",
        "hot_objects",
    }
    both = config(["--api-token", TOK, "--collector.latency"], env)
    assert both.collectors == frozenset(GROUPS) - {"hot_objects"}


def test_unknown_collector_group_in_env() -> None:
    message = error(["--api-token", TOK], {"DO_EXPORTER_DISABLED_COLLECTORS": "latency,cpu"})
    assert message.startswith('DO_EXPORTER_DISABLED_COLLECTORS: unknown collector group "cpu"')


def test_namespace_filter_is_compiled() -> None:
    cfg = config(["--api-token", TOK, "--namespace-include", "prod_.*"],
                 {"DO_EXPORTER_NAMESPACE_EXCLUDE": ".*Test"})  # fmt: skip
    assert cfg.namespace_filter.allows("prod_api", "Api")
    assert not cfg.namespace_filter.allows("prod_api", "ApiTest")
    assert not cfg.namespace_filter.allows("dev_api", "Api")


def test_namespace_filter_keeps_the_totals_of_a_list() -> None:
    """A filtered list keeps the namespaces allowed, and counts every one listed."""
    listed = [Namespace("a", "prod_a", use_sqlite=True), Namespace("b", "dev_b", use_sqlite=True),
              Namespace("c", "dev_c")]  # fmt: skip
    kept = NamespaceFilter(include=re.compile("prod_.*")).listed(listed)
    assert [n.id for n in kept.namespaces] == ["a"] and (kept.total, kept.sqlite) == (3, 2)
    everything = NamespaceFilter().listed(iter(listed))
    assert [n.id for n in everything.namespaces] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("pattern", "needle"),
    [("(", "not a valid regular expression"), ("a" * 1025, "1025 characters long")],
)
def test_bad_namespace_pattern(pattern: str, needle: str) -> None:
    message = error(["--api-token", TOK, "--namespace-exclude", pattern])
    assert message.startswith("--namespace-exclude/DO_EXPORTER_NAMESPACE_EXCLUDE: ")
    assert needle in message and len(message) < 300
