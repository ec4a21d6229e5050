"""The official Cloudflare SDK, pointed at the simulator, reads it as it reads Cloudflare."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

from do_exporter.simulator import Scenario, Simulator

if TYPE_CHECKING:
    import cloudflare

ACC = "0123456789abcdef0123456789abcdef"
ACC_OTHER = "fedcba9876543210fedcba9876543210"
NAMESPACE_IDS = [f"{i:032x}" for i in range(1, 24)]  # 23 namespaces: two SDK pages of 20
BIG = NAMESPACE_IDS[0]


def scenario(shape: str = "both") -> Scenario:
    namespaces: list[dict[str, Any]] = [
        {"id": ns, "name": f"worker_Class{i}", "class": f"Class{i}", "script": "worker",
         "use_sqlite": i % 2 == 0, "objects": 3}
        for i, ns in enumerate(NAMESPACE_IDS)
    ]  # fmt: skip
    namespaces[0].update(objects=25, stored_data_ratio=0.25)  # three pages of 10
    return Scenario.from_dict(
        {
            "seed": 11,
            "cursor_shape": shape,
            "tokens": [{"value": "sdk-token"}],
            "accounts": [
                {"id": ACC, "name": "SDK", "namespaces": namespaces},
                {"id": ACC_OTHER, "name": "Other"},
            ],
        }
    )


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(scenario()) as running:
        yield running


def sdk() -> ModuleType:
    """The SDK, imported by the tests that use it: not by every xdist worker that collects
    this module (it costs each a third of a second of CPU)."""
    return importlib.import_module("cloudflare")


def client(sim: Simulator) -> cloudflare.Cloudflare:
    cf: cloudflare.Cloudflare = sdk().Cloudflare(
        api_token=sim.token, base_url=sim.api_url, max_retries=0
    )
    return cf


def test_sdk_lists_accounts_and_every_namespace(sim: Simulator) -> None:
    """accounts.list and namespaces.list (auto-paging, 20 per page) return the scenario's."""
    cf = client(sim)
    assert [a.id for a in cf.accounts.list()] == [ACC, ACC_OTHER]
    namespaces = list(cf.durable_objects.namespaces.list(account_id=ACC))
    assert [ns.id for ns in namespaces] == NAMESPACE_IDS
    first = namespaces[0]
    assert (first.name, first.class_, first.script, first.use_sqlite) == (
        "worker_Class0", "Class0", "worker", True,
    )  # fmt: skip


@pytest.mark.parametrize("shape", ["both", "cursors"])
def test_sdk_iterates_every_object_across_pages(shape: str) -> None:
    """objects.list (limit 10, the smallest page) follows result_info.cursors.after through
    3 pages."""
    with Simulator(scenario(shape)) as sim:
        pages = client(sim).durable_objects.namespaces.objects.list(BIG, account_id=ACC, limit=10)
        objects = list(pages)
        ids = {o.id for o in objects}
        stored = sum(1 for o in objects if o.has_stored_data)
        assert len(objects) == len(ids) == 25
        assert (len(ids), stored) == sim.expected(ACC, BIG)
        assert sim.stats()["requests"]["objects"] == {"200": 3}


def test_sdk_reads_only_cursors_after() -> None:
    """With the spec's result_info.cursor alone, SDK 5.x stops after one page: it reads cursors."""
    with Simulator(scenario("cursor")) as only_cursor:
        objects = list(
            client(only_cursor).durable_objects.namespaces.objects.list(
                BIG, account_id=ACC, limit=10
            )
        )
        assert len(objects) == 10


def test_sdk_raises_the_right_errors(sim: Simulator) -> None:
    """Unknown namespace is NotFoundError; a 429 is RateLimitError; a bad token is 403."""
    cf = client(sim)
    cloudflare = sdk()
    with pytest.raises(cloudflare.NotFoundError):
        list(cf.durable_objects.namespaces.objects.list("f" * 32, account_id=ACC))
    sim.inject("status", endpoint="namespaces", status=429, retry_after=1)
    with pytest.raises(cloudflare.RateLimitError):
        list(cf.durable_objects.namespaces.list(account_id=ACC))
    wrong = cloudflare.Cloudflare(api_token="nope", base_url=sim.api_url, max_retries=0)
    with pytest.raises(cloudflare.PermissionDeniedError):
        list(wrong.durable_objects.namespaces.list(account_id=ACC))


def test_sdk_verifies_the_token(sim: Simulator) -> None:
    """user.tokens.verify returns the token's status."""
    result = client(sim).user.tokens.verify()
    assert result is not None and result.status == "active"
