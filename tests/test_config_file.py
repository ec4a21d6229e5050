"""--config.file: several credentials from YAML; one test per kind of bad file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from do_exporter.cli import parse_options
from do_exporter.config import Config, ConfigError, Credential, Secret, TokenFile, build_config

ACC1 = "0123456789abcdef0123456789abcdef"
ACC2 = "fedcba9876543210fedcba9876543210"
TOK_A = "tok-a-" + "0123456789abcdefghijklmnopqrstuvwxyz"[:34]
TOK_B = "tok-b-" + "0123456789abcdefghijklmnopqrstuvwxyz"[:34]


def load(path: Path, env: dict[str, str] | None = None, *argv: str) -> Config:
    raw = parse_options(["--config.file", str(path), *argv])
    return build_config(raw, env or {}, stderr_is_tty=False)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return path


def error(path: Path, env: dict[str, str] | None = None, *argv: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(path, env, *argv)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("--config.file/DO_EXPORTER_CONFIG_FILE: ")
    assert str(path) in message
    return message


def two_credentials(tmp_path: Path) -> Path:
    (tmp_path / "a").write_text(TOK_A + "\n")
    return write(
        tmp_path,
        f"""
credentials:
  - name: agency-a
    token_file: a            # relative: from the config file's folder
    accounts: [{ACC1}]
    api_rate_limit: 600
    api_reserve: 100
  - name: agency_b
    token_env: CF_TOKEN_B
""",
    )


def test_two_credentials_are_read_with_their_defaults(tmp_path: Path) -> None:
    """Each entry becomes a Credential; unset budgets take the flags' defaults."""
    cfg = load(two_credentials(tmp_path), {"CF_TOKEN_B": TOK_B})
    a, b = cfg.credentials
    assert (a.name, a.account_ids, a.api_rate_limit, a.api_reserve) == (
        "agency-a",
        (ACC1,),
        600,
        100,
    )
    assert isinstance(a.token, TokenFile) and a.token.reveal() == TOK_A
    assert a.token.path == str(tmp_path / "a")
    assert b == Credential("agency_b", token=Secret(TOK_B)).for_interval(300)
    # The single-token fields are the first credential's.
    assert (cfg.api_token, cfg.account_ids, cfg.api_rate_limit, cfg.api_reserve) == (
        a.token, (ACC1,), 600, 100,
    )  # fmt: skip
    assert cfg.config_file == str(tmp_path / "config.yml")


def test_config_file_from_the_environment(tmp_path: Path) -> None:
    path = two_credentials(tmp_path)
    cfg = build_config(
        parse_options([]),
        {"DO_EXPORTER_CONFIG_FILE": str(path), "CF_TOKEN_B": TOK_B},
        stderr_is_tty=False,
    )
    assert [c.name for c in cfg.credentials] == ["agency-a", "agency_b"]


def test_without_a_file_the_flags_make_one_default_credential() -> None:
    cfg = build_config(
        parse_options(["--api-token", TOK_A, "--account-id", ACC2, "--api-reserve", "0"]),
        {"DO_EXPORTER_API_RATE_LIMIT": "700"},
        stderr_is_tty=False,
    )
    assert cfg.credentials == (
        Credential(
            "default", (ACC2,), token=Secret(TOK_A), api_rate_limit=700, api_reserve=0
        ).for_interval(300),
    )


def test_repr_of_credentials_hides_tokens(tmp_path: Path) -> None:
    cfg = load(two_credentials(tmp_path), {"CF_TOKEN_B": TOK_B})
    for text in (repr(cfg), str(cfg), repr(cfg.credentials)):
        assert TOK_A not in text and TOK_B not in text


# -- one case per kind of bad file -----------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "env"),
    [
        (("--api-token", TOK_A), {}),
        (("--api-token-file", "/run/secrets/x"), {}),
        (("--account-id", ACC1), {}),
        (("--api-rate-limit", "10"), {}),
        (("--api-reserve", "10"), {}),
        ((), {"CLOUDFLARE_API_TOKEN": TOK_A}),
        ((), {"CLOUDFLARE_API_TOKEN_FILE": "/x"}),
        ((), {"CLOUDFLARE_ACCOUNT_ID": ACC1}),
        ((), {"DO_EXPORTER_API_RATE_LIMIT": "10"}),
        ((), {"DO_EXPORTER_API_RESERVE": "10"}),
    ],
)
def test_file_with_credential_flags(
    tmp_path: Path, flag: tuple[str, ...], env: dict[str, str]
) -> None:
    """A file plus a token, account or budget flag (or its variable) is refused."""
    path = two_credentials(tmp_path)
    with pytest.raises(ConfigError) as info:
        load(path, {"CF_TOKEN_B": TOK_B, **env}, *flag)
    message = str(info.value)
    assert "cannot be combined with" in message
    assert TOK_A not in message


def test_file_with_demo(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--demo: give only one"):
        load(two_credentials(tmp_path), {}, "--demo")


def test_missing_file(tmp_path: Path) -> None:
    assert "No such file" in error(tmp_path / "nope.yml")


def test_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert "not a regular file" in error(fifo)


def test_file_over_1_mib(tmp_path: Path) -> None:
    assert "larger than 1 MiB" in error(write(tmp_path, "#" * (1024 * 1024 + 1)))


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_bytes(b"credentials: \xff\n")
    assert "not UTF-8" in error(path)


def test_yaml_syntax_error(tmp_path: Path) -> None:
    message = error(write(tmp_path, "credentials:\n  - name: [a\n"))
    assert "not valid YAML: line" in message


def test_unsafe_yaml_tag(tmp_path: Path) -> None:
    """Python object tags are refused by the safe loader, nothing is constructed."""
    message = error(write(tmp_path, "credentials: !!python/object/apply:os.system ['true']\n"))
    assert "not valid YAML" in message


def test_duplicate_key(tmp_path: Path) -> None:
    text = "credentials:\n  - name: a\n    name: b\n    token_env: X\n"
    assert "key 'name' given twice" in error(write(tmp_path, text))


def test_top_level_not_a_mapping(tmp_path: Path) -> None:
    assert "(top level): must be a mapping" in error(write(tmp_path, "- a\n"))


def test_empty_file(tmp_path: Path) -> None:
    assert "(top level): must be a mapping" in error(write(tmp_path, ""))


def test_unknown_top_level_key(tmp_path: Path) -> None:
    message = error(write(tmp_path, "credentials: []\ninterval: 5\n"))
    assert ": interval: unknown key" in message


def test_no_credentials(tmp_path: Path) -> None:
    assert "credentials: must be a non-empty list" in error(write(tmp_path, "credentials: []\n"))


def test_credential_not_a_mapping(tmp_path: Path) -> None:
    assert "credentials[0]: must be a mapping" in error(write(tmp_path, "credentials: [a]\n"))


def test_unknown_credential_key(tmp_path: Path) -> None:
    text = "credentials:\n  - name: a\n    token_env: X\n    acounts: []\n"
    assert "credentials[0].acounts: unknown key" in error(write(tmp_path, text), {"X": TOK_A})


def test_inline_token(tmp_path: Path) -> None:
    """A token written in the file is refused, and not echoed."""
    text = f"credentials:\n  - name: a\n    token: {TOK_A}\n"
    message = error(write(tmp_path, text))
    assert "credentials[0].token: a token is never written in the file" in message
    assert TOK_A not in message


@pytest.mark.parametrize("name", ["", "Agency", "a b", "x" * 65, 5])
def test_bad_name(tmp_path: Path, name: object) -> None:
    text = f"credentials:\n  - name: {name!r}\n    token_env: X\n"
    assert "credentials[0].name: required" in error(write(tmp_path, text), {"X": TOK_A})


def test_missing_name(tmp_path: Path) -> None:
    text = "credentials:\n  - token_env: X\n"
    assert "credentials[0].name: required" in error(write(tmp_path, text), {"X": TOK_A})


def test_duplicate_name(tmp_path: Path) -> None:
    text = "credentials:\n  - {name: a, token_env: X}\n  - {name: a, token_env: X}\n"
    assert "credentials[1].name: 'a' is used twice" in error(write(tmp_path, text), {"X": TOK_A})


def test_both_token_file_and_token_env(tmp_path: Path) -> None:
    text = "credentials:\n  - {name: a, token_env: X, token_file: /x}\n"
    assert "credentials[0]: give exactly one of" in error(write(tmp_path, text), {"X": TOK_A})


def test_neither_token_file_nor_token_env(tmp_path: Path) -> None:
    text = "credentials:\n  - {name: a}\n"
    assert "credentials[0]: give exactly one of" in error(write(tmp_path, text))


def test_token_env_not_a_variable_name(tmp_path: Path) -> None:
    text = f"credentials:\n  - {{name: a, token_env: '{TOK_A}='}}\n"
    message = error(write(tmp_path, text))
    assert "credentials[0].token_env: must be the name of an environment variable" in message


def test_token_env_unset(tmp_path: Path) -> None:
    text = "credentials:\n  - {name: a}\n  - {name: b, token_env: CF_TOKEN_B}\n"
    text = text.replace("{name: a}", "{name: a, token_env: CF_TOKEN_A}")
    message = error(write(tmp_path, text), {"CF_TOKEN_A": TOK_A})
    assert "credentials[1].token_env: the environment variable CF_TOKEN_B is not set" in message


def test_token_env_implausible_token(tmp_path: Path) -> None:
    text = "credentials:\n  - {name: a, token_env: CF_TOKEN_A}\n"
    message = error(write(tmp_path, text), {"CF_TOKEN_A": "short-token"})
    assert "credentials[0].token_env: CF_TOKEN_A: the API token is not 32..256" in message
    assert "short-token" not in message


def test_token_file_unreadable(tmp_path: Path) -> None:
    text = "credentials:\n  - {name: a, token_file: /dev/zero}\n"
    message = error(write(tmp_path, text))
    assert "credentials[0].token_file: cannot read token file '/dev/zero': not a regular" in message


def test_token_file_not_a_string(tmp_path: Path) -> None:
    text = "credentials:\n  - {name: a, token_file: [x]}\n"
    assert "credentials[0].token_file: must be a path" in error(write(tmp_path, text))


def test_accounts_not_a_list(tmp_path: Path) -> None:
    text = f"credentials:\n  - {{name: a, token_env: X, accounts: {ACC1}}}\n"
    assert "credentials[0].accounts: must be a list" in error(write(tmp_path, text), {"X": TOK_A})


def test_bad_account_id_is_not_echoed(tmp_path: Path) -> None:
    text = f"credentials:\n  - {{name: a, token_env: X, accounts: [{ACC1}, {TOK_B}]}}\n"
    message = error(write(tmp_path, text), {"X": TOK_A})
    assert "credentials[0].accounts[1]: the value is not a Cloudflare account id" in message
    assert "value not shown)" in message and TOK_B not in message


def test_short_bad_account_id_is_shown(tmp_path: Path) -> None:
    """A value shorter than any token cannot be one: the message quotes it."""
    text = "credentials:\n  - {name: a, token_env: X, accounts: [1]}\n"
    message = error(write(tmp_path, text), {"X": TOK_A})
    assert 'credentials[0].accounts[0]: "1" is not a Cloudflare account id' in message


def test_account_in_two_credentials(tmp_path: Path) -> None:
    """One account under two tokens would be exported twice: refused."""
    text = (
        f"credentials:\n  - {{name: a, token_env: X, accounts: [{ACC1}]}}\n"
        f"  - {{name: b, token_env: X, accounts: [{ACC2}, {ACC1}]}}\n"
    )
    message = error(write(tmp_path, text), {"X": TOK_A})
    assert "credentials[1].accounts[1]: account" in message and "credential 'a'" in message


@pytest.mark.parametrize("value", ["0", "100001", "1.5", "'10'", "true"])
def test_bad_api_rate_limit(tmp_path: Path, value: str) -> None:
    text = f"credentials:\n  - {{name: a, token_env: X, api_rate_limit: {value}}}\n"
    assert "credentials[0].api_rate_limit: " in error(write(tmp_path, text), {"X": TOK_A})


@pytest.mark.parametrize("value", ["-1", "100001", "null"])
def test_bad_api_reserve(tmp_path: Path, value: str) -> None:
    text = f"credentials:\n  - {{name: a, token_env: X, api_reserve: {value}}}\n"
    assert "credentials[0].api_reserve: " in error(write(tmp_path, text), {"X": TOK_A})
