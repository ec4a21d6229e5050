"""The options that shape what is exported reach the code that acts on them: `--top-objects`,
`--no-collector.<group>` and the namespace filter, through `--once --demo` in-process."""

from __future__ import annotations

import os

import pytest

from do_exporter import cli

P = "cloudflare_durable_objects_"


def once(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *flags: str) -> str:
    for name in list(os.environ):
        if name.startswith(("CLOUDFLARE_", "DO_EXPORTER_")):
            monkeypatch.delenv(name)
    assert cli.main(["--once", "--demo", "--log-level", "error", *flags]) == 0
    return capsys.readouterr().out


def families(text: str) -> set[str]:
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def samples(text: str, family: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(family + "{")]


def test_defaults_export_hot_objects_and_latency(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo, as shipped, has hot objects and wall-time percentiles with values."""
    out = once(capsys, monkeypatch)
    assert samples(out, P + "hot_object_cpu_ratio")
    assert samples(out, P + "request_wall_time_seconds")
    assert samples(out, P + "objects")


def test_groups_off_and_top_objects_zero_leave_their_families_out(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--top-objects 0 and --no-collector.latency remove those families; the rest stay."""
    out = once(capsys, monkeypatch, "--top-objects", "0", "--no-collector.latency")
    names = families(out)
    assert not samples(out, P + "hot_object_cpu_ratio")
    assert not samples(out, P + "hot_object_requests_per_second")
    assert P + "request_wall_time_seconds" not in names
    assert P + "request_wall_time_max_seconds" not in names
    assert samples(out, P + "requests_total") and samples(out, P + "objects")


def test_no_inventory_collector_drops_per_namespace_counts(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--no-collector.inventory removes the per-namespace object counts."""
    out = once(capsys, monkeypatch, "--no-collector.inventory")
    assert not samples(out, P + "objects")
    assert samples(out, P + "requests_total")


def test_namespace_filter_leaves_filtered_namespaces_out(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--namespace-exclude drops a namespace's series (counts and usage); the account's
    namespace total still counts it."""
    full = once(capsys, monkeypatch)
    names = {
        line.split('namespace_name="', 1)[1].split('"', 1)[0]
        for line in samples(full, P + "objects")
    }
    victim = sorted(names)[0]
    out = once(capsys, monkeypatch, "--namespace-exclude", victim)
    assert not [s for s in samples(out, P + "objects") if f'namespace_name="{victim}"' in s]
    assert not [s for s in samples(out, P + "requests_total") if f'namespace_name="{victim}"' in s]
    assert len(samples(out, P + "objects")) == len(samples(full, P + "objects")) - 1
    assert samples(out, P + "namespaces") == samples(full, P + "namespaces")
