"""Property tests (hypothesis): bad input is refused cleanly, never with a stray exception.

- Any status, headers and body the API could send end, in the client, as a result or a
  :class:`CloudflareAPIError`; the pure parsers raise nothing else either.
- Any combination of flags and environment values builds a :class:`Config` or is refused
  with one line (``ConfigError``, or argparse's own exit 2).
- Label values with quotes, backslashes, newlines and non-ASCII survive the exposition.

The bugs these properties found (``docs/reliability.md``) each keep a one-example test at
the end.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import random
import threading
from collections.abc import Mapping

import pytest
import requests
import requests_mock
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from do_exporter.cli import parse_options
from do_exporter.cloudflare import (
    MAX_PAUSE,
    CloudflareAPIError,
    CloudflareClient,
    RetryPolicy,
    parse_envelope,
    parse_objects_page,
    parse_ratelimit,
    parse_retry_after,
)
from do_exporter.config import Config, ConfigError, Secret, build_config
from do_exporter.metrics.snapshot import render
from do_exporter.model import AccountSnapshot, Namespace, NamespaceCount, Snapshot
from do_exporter.ratelimit import Lane, RateLimiter, reserve_hold

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Retries of the same shape, without the waiting: a Retry-After above 10 ms is not waited for.
NO_WAIT = RetryPolicy(attempts=3, base=0.0005, max_backoff=0.001, max_retry_after=0.01)
API = "http://api.invalid/client/v4"
ACCOUNT = "a" * 32
NAMESPACE = "b" * 32

# ---------------------------------------------------------------------------------------
# Strategies: what an API (or a proxy in front of it) might answer.

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=12),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
ids = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=6), json_values)
items = st.one_of(
    st.fixed_dictionaries(
        {"id": ids},
        optional={
            "name": json_scalars,
            "class": json_scalars,
            "script": json_scalars,
            "use_sqlite": json_scalars,
            "hasStoredData": json_scalars,
        },
    ),
    json_scalars,
)
result_info = st.fixed_dictionaries(
    {},
    optional={
        "cursor": st.one_of(st.sampled_from(["", "c1", "c2"]), json_scalars),
        "cursors": st.one_of(json_values, st.fixed_dictionaries({"after": json_scalars})),
        "page": json_scalars,
        "per_page": st.one_of(st.integers(-2, 3), json_scalars),
        "total_pages": st.one_of(st.integers(-2, 3), json_scalars),
        "count": json_scalars,
    },
)
errors = st.lists(
    st.one_of(
        st.fixed_dictionaries({"code": st.integers(0, 20_000), "message": json_scalars}),
        json_values,
    ),
    max_size=3,
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "success": st.one_of(st.booleans(), json_scalars),
        "errors": st.one_of(errors, json_values),
        "messages": json_values,
        "result": st.one_of(st.lists(items, max_size=5), json_values),
        "result_info": st.one_of(result_info, json_values),
    },
)
bodies = st.one_of(
    envelopes.map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    envelopes.map(lambda d: json.dumps(d).encode()[: len(json.dumps(d)) // 2]),  # truncated
    st.binary(max_size=64),
    st.just(b"<html><center><h1>502 Bad Gateway</h1></center></html>"),
)
header_text = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=24),
    # requests decodes header bytes as Latin-1 ("\xb2" is "²", a digit to str.isdigit)
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=8),
    st.sampled_from([15, 16, 309, 400, 4301, 5000]).map(lambda n: "9" * n),  # float, int() limits
)
retry_after = st.one_of(
    header_text,
    st.integers(0, 10**12).map(str),
    st.sampled_from(["inf", "-inf", "nan", "1e10", "-5", "1e400", " 7 "]),
    st.just("Wed, 21 Oct 2015 07:28:00 GMT"),
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "Retry-After": retry_after,
        "Ratelimit": st.one_of(
            header_text,
            st.builds('"default";r={};t={}'.format, st.integers(0, 99), st.integers(0, 10**6)),
        ),
        "X-RateLimit-Remaining": header_text,
        "X-RateLimit-Reset": st.one_of(header_text, st.integers(0, 2 * 10**9).map(str)),
        "CF-Ray": header_text,
        "Content-Type": st.sampled_from(["application/json", "text/html", "text/plain"]),
    },
)
statuses = st.one_of(
    st.sampled_from([200, 400, 403, 404, 408, 409, 429, 500, 502, 503]), st.integers(200, 599)
)
answers = st.lists(st.tuples(statuses, headers, bodies), min_size=1, max_size=4)


LONGEST_PAUSE = MAX_PAUSE  # whatever the headers say, the limiter never stops for longer


class _SkippingLimiter(RateLimiter):
    """Records every pause, and moves its clock past it instead of waiting it out.

    A 200 page whose ``Ratelimit`` header says the budget is spent pauses the limiter (up
    to ``MAX_PAUSE``) before the next page; on the real clock one such example would hold
    the test for minutes.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []
        super().__init__(10**9, clock=lambda: self.now)

    def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)
        super().pause(seconds)

    def observe(self, remaining: int | None, reset: float | None) -> float:
        hold = reserve_hold(remaining, reset, self.reserve)
        if hold > 0:
            self.pauses.append(hold)
        return super().observe(remaining, reset)

    def acquire(self, lane: Lane = Lane.FRESH) -> float:
        self.now += self.paused_for()
        return super().acquire(lane)

    def longest_pause(self) -> float:
        return max(self.pauses, default=0.0)


def _client(session: requests.Session, limiter: RateLimiter | None = None) -> CloudflareClient:
    return CloudflareClient(
        session,
        API,
        Secret("prop-token"),
        limiter=limiter or RateLimiter(10**9),
        retry=NO_WAIT,
        rng=random.Random(0),
    )


def _mock(mocker: requests_mock.Mocker, answers: list[tuple[int, dict[str, str], bytes]]) -> None:
    # requests-mock answers them in order, then repeats the last one.
    mocker.get(
        requests_mock.ANY,
        [{"status_code": s, "headers": h, "content": b} for s, h, b in answers],
    )


# ---------------------------------------------------------------------------------------
# The client: a result or a CloudflareAPIError, nothing else.


@SETTINGS
@given(answers=answers)
def test_count_objects_ends_in_a_count_or_an_api_error(
    answers: list[tuple[int, dict[str, str], bytes]],
) -> None:
    """Whatever the objects endpoint answers, a count or a CloudflareAPIError comes out."""
    with requests.Session() as session, requests_mock.Mocker(session=session) as mocker:
        _mock(mocker, answers)
        limiter = _SkippingLimiter()
        try:
            count = _client(session, limiter).count_objects(ACCOUNT, NAMESPACE)
        except CloudflareAPIError as exc:
            assert str(exc) and exc.kind in ("api", "http", "transport", "invalid_response")
        else:
            assert 0 <= count.with_stored_data <= count.objects and count.pages >= 1
        assert limiter.longest_pause() <= LONGEST_PAUSE


@SETTINGS
@given(answers=answers)
def test_list_namespaces_ends_in_a_list_or_an_api_error(
    answers: list[tuple[int, dict[str, str], bytes]],
) -> None:
    """Whatever the namespaces endpoint answers, a list or a CloudflareAPIError comes out."""
    with requests.Session() as session, requests_mock.Mocker(session=session) as mocker:
        _mock(mocker, answers)
        limiter = _SkippingLimiter()
        try:
            namespaces = _client(session, limiter).list_namespaces(ACCOUNT)
        except CloudflareAPIError:
            pass
        else:
            assert all(isinstance(n, Namespace) and isinstance(n.id, str) for n in namespaces)
            assert len({n.id for n in namespaces}) == len(namespaces)
        assert limiter.longest_pause() <= LONGEST_PAUSE


@SETTINGS
@given(status=statuses, body=bodies, ray=st.one_of(st.none(), header_text))
def test_parsers_raise_only_api_errors(status: int, body: bytes, ray: str | None) -> None:
    """parse_envelope and parse_objects_page: a value or a CloudflareAPIError."""
    for parse in (
        lambda: parse_envelope("namespaces", status, body, ray),
        lambda: parse_objects_page(status, body, ray),
    ):
        with contextlib.suppress(CloudflareAPIError):
            parse()


@SETTINGS
@given(
    headers=st.dictionaries(
        st.sampled_from(["Ratelimit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Other"]),
        st.one_of(st.text(max_size=30), header_text, header_text.map("r={0};t={0}".format)),
    ),
    value=st.one_of(st.none(), st.text(max_size=40)),
    now=st.floats(0, 4e9),
)
# Found by this test: "²" is a digit to str.isdigit() but not to int() or float(), and
# requests decodes header bytes as Latin-1, where it is b"\xb2".
@example(headers={"X-RateLimit-Remaining": "²"}, value=None, now=0.0)
@example(headers={"X-RateLimit-Reset": "²", "Ratelimit": "r=²;t=²"}, value="²", now=0.0)
def test_header_parsers_never_raise(
    headers: Mapping[str, str], value: str | None, now: float
) -> None:
    """parse_ratelimit and parse_retry_after take any text; a Retry-After is finite, >= 0."""
    remaining, reset = parse_ratelimit(headers)
    assert remaining is None or remaining >= 0
    assert reset is None or isinstance(reset, float)
    seconds = parse_retry_after(value, now)
    assert seconds is None or (math.isfinite(seconds) and seconds >= 0)


# ---------------------------------------------------------------------------------------
# Configuration: a Config, or one line.

FLAGS = {
    "--api-token": st.text(max_size=12),
    "--api-token-file": st.sampled_from(["/nonexistent/token", "/", ""]),
    "--account-id": st.one_of(st.just(ACCOUNT), st.text(max_size=33)),
    "--api-url": st.one_of(st.just("https://api.cloudflare.com/client/v4"), st.text(max_size=20)),
    "--interval": st.one_of(
        st.sampled_from(["10", "300", "9.99", "1e3", "nan", "-inf", "0x10"]), st.text(max_size=6)
    ),
    "--listen-address": st.one_of(
        st.sampled_from([":9877", "127.0.0.1:0", "[::1]:9877", ":70000", "host"]),
        st.text(max_size=10),
    ),
    "--api-rate-limit": st.one_of(st.integers(-5, 200_000).map(str), st.text(max_size=5)),
    "--api-timeout": st.one_of(st.sampled_from(["1", "600", "0.5", "601"]), st.text(max_size=5)),
    "--max-concurrency": st.one_of(st.integers(-1, 300).map(str), st.text(max_size=5)),
    "--log-level": st.one_of(st.sampled_from(["debug", "INFO", "chatty"]), st.text(max_size=6)),
    "--log-format": st.one_of(st.sampled_from(["json", "console", "xml"]), st.text(max_size=6)),
    "--web.config.file": st.sampled_from(["/etc/web.yml"]),
}
SWITCHES = ["--once", "--demo"]
ENV = {
    "CLOUDFLARE_API_TOKEN": FLAGS["--api-token"],
    "CLOUDFLARE_API_TOKEN_FILE": FLAGS["--api-token-file"],
    "CLOUDFLARE_ACCOUNT_ID": st.one_of(st.just(f"{ACCOUNT},{'c' * 32}"), st.text(max_size=34)),
    "CLOUDFLARE_API_URL": FLAGS["--api-url"],
    "DO_EXPORTER_INTERVAL": FLAGS["--interval"],
    "DO_EXPORTER_LISTEN_ADDRESS": FLAGS["--listen-address"],
    "DO_EXPORTER_API_RATE_LIMIT": FLAGS["--api-rate-limit"],
    "DO_EXPORTER_API_TIMEOUT": FLAGS["--api-timeout"],
    "DO_EXPORTER_MAX_CONCURRENCY": FLAGS["--max-concurrency"],
    "DO_EXPORTER_LOG_LEVEL": FLAGS["--log-level"],
    "DO_EXPORTER_LOG_FORMAT": FLAGS["--log-format"],
}


def _no_nul(text: str) -> bool:
    return "\x00" not in text  # neither argv nor the environment can carry a NUL


@st.composite
def command_lines(draw: st.DrawFn) -> tuple[list[str], dict[str, str]]:
    argv: list[str] = []
    for flag in draw(st.lists(st.sampled_from(sorted(FLAGS)), max_size=6)):
        argv += [flag, draw(FLAGS[flag].filter(_no_nul))]
    argv += draw(st.lists(st.sampled_from(SWITCHES), max_size=2, unique=True))
    if draw(st.booleans()):
        argv.append(draw(st.sampled_from(["--bogus", "-x", "stray"])))
    env = {
        name: draw(ENV[name].filter(_no_nul))
        for name in draw(st.sets(st.sampled_from(sorted(ENV))))
    }
    return argv, env


@SETTINGS
@given(command_lines())
def test_any_flags_and_env_build_a_config_or_one_line(
    command_line: tuple[list[str], dict[str, str]],
) -> None:
    """Flags and env values: a Config, a one-line ConfigError, or argparse's one-line exit 2."""
    argv, env = command_line
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            raw = parse_options(argv)
    except SystemExit as exc:
        assert exc.code == 2
        lines = stderr.getvalue().splitlines()
        assert len(lines) == 1 and lines[0].startswith("do-exporter: error: "), lines
        return
    try:
        config = build_config(raw, env, stderr_is_tty=False)
    except ConfigError as exc:
        message = str(exc)
        assert message and "\n" not in message and "\r" not in message, message
        assert message.startswith(("--", "CLOUDFLARE_")), message  # names the flag or variable
        return
    assert isinstance(config, Config)
    assert config.interval >= 10 and config.api_rate_limit >= 1
    assert config.demo or bool(config.api_token)


# ---------------------------------------------------------------------------------------
# Label values: escaped on the way out, identical on the way back.

label_text = st.lists(
    st.one_of(
        st.sampled_from(['"', "\\", "\n", "\\n", '\\"', "{", "}", ",", "=", " ", "é", "日", "🦆"]),
        st.characters(blacklist_categories=["Cs"]),
    ),
    max_size=12,
).map("".join)


@SETTINGS
@given(
    account_id=label_text,
    namespaces=st.lists(
        st.tuples(label_text, st.one_of(st.none(), label_text), label_text, label_text),
        min_size=1,
        max_size=4,
        unique_by=lambda t: t[0],
    ),
)
def test_label_values_survive_the_exposition(
    account_id: str, namespaces: list[tuple[str, str | None, str, str]]
) -> None:
    """Quotes, backslashes, newlines and non-ASCII in labels parse back unchanged."""
    spaces = tuple(
        Namespace(id=i, name=name, class_name=cls, script=script, use_sqlite=None)
        for i, name, cls, script in namespaces
    )
    account = AccountSnapshot(
        account_id=account_id,
        namespaces=spaces,
        counts={n.id: NamespaceCount(7, 3, 1_700_000_000.0) for n in spaces},
        last_poll_success=True,
        last_success_at=1_700_000_000.0,
        namespaces_listed=True,
    )
    text = render(Snapshot(accounts=(account,), complete=True)).decode("utf-8")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    info = families["cloudflare_durable_objects_namespace_info"].samples
    assert {
        (
            s.labels["account_id"],
            s.labels["namespace_id"],
            s.labels["namespace_name"],
            s.labels["class"],
            s.labels["script"],
        )
        for s in info
    } == {(account_id, i, name or "", cls, script) for i, name, cls, script in namespaces}
    objects = families["cloudflare_durable_objects_objects"].samples
    assert {s.labels["namespace_id"]: s.value for s in objects} == {i: 7.0 for i, *_ in namespaces}


# ---------------------------------------------------------------------------------------
# The bugs the properties found (now fixed), one example each.


def test_unhashable_namespace_id_is_an_api_error() -> None:
    """A namespace item whose id is a list is skipped or refused, never a TypeError."""
    body = {"success": True, "errors": [], "result": [{"id": ["x"]}], "result_info": {}}
    with requests.Session() as session, requests_mock.Mocker(session=session) as mocker:
        mocker.get(requests_mock.ANY, json=body)
        with contextlib.suppress(CloudflareAPIError):
            _client(session).list_namespaces(ACCOUNT)


@pytest.mark.parametrize("value", ["inf", "1e10"])
def test_huge_retry_after_does_not_break_later_requests(value: str) -> None:
    """A 429 with an absurd Retry-After: later requests still end as a result or API error."""
    limiter = RateLimiter(10**9)
    with requests.Session() as session, requests_mock.Mocker(session=session) as mocker:
        client = CloudflareClient(
            session, API, Secret("prop-token"), limiter=limiter, retry=NO_WAIT
        )
        mocker.get(
            requests_mock.ANY,
            status_code=429,
            headers={"Retry-After": value},
            json={"success": False, "errors": [{"code": 971, "message": "slow down"}]},
        )
        with pytest.raises(CloudflareAPIError):
            client.list_namespaces(ACCOUNT)
        outcome: list[BaseException | None] = []

        def again() -> None:
            try:
                client.list_namespaces(ACCOUNT)
                outcome.append(None)
            except BaseException as exc:  # what escapes is the point
                outcome.append(exc)

        worker = threading.Thread(target=again, daemon=True)
        worker.start()
        worker.join(0.5)
        limiter.pause(0)  # harmless: pauses only extend
        # Either still waiting (bounded pause, not under test here) or a clean API error.
        assert worker.is_alive() or isinstance(outcome[0], CloudflareAPIError | None)
        assert limiter.paused_for() <= LONGEST_PAUSE


def test_number_with_a_newline_is_refused_in_one_line() -> None:
    """`--interval '5\\n'` is refused with a one-line message."""
    raw = parse_options(["--api-token", "x" * 40, "--interval", "5\n"])
    with pytest.raises(ConfigError) as info:
        build_config(raw, {}, stderr_is_tty=False)
    assert "\n" not in str(info.value)


def test_token_never_in_a_config_error() -> None:
    """A bad token is described, never echoed."""
    raw = parse_options(["--api-token", "se cret-value-7"])
    with pytest.raises(ConfigError) as info:
        build_config(raw, {}, stderr_is_tty=False)
    assert "cret-value-7" not in str(info.value)
