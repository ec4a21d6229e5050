"""The admin API under ``/__simulator/``: the control methods over HTTP, as JSON.

``GET stats|info|expected``; ``POST inject|clear_faults|reset_stats|objects|namespaces/add|
namespaces/delete|tokens/revoke|tokens/status`` with a JSON object body (see
``docs/simulator.md``). A bad request is a 400 ``{"ok": false, "error": ...}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import parse_qs

from do_exporter.simulator.responses import Response


class Control(Protocol):
    """The control methods the admin API calls (``Simulator``'s public ones)."""

    def stats(self) -> dict[str, Any]: ...
    def info(self) -> dict[str, Any]: ...
    def expected(self, account_id: str, namespace_id: str) -> tuple[int, int]: ...
    def inject(self, fault: str, **params: Any) -> None: ...
    def clear_faults(self) -> None: ...
    def reset_stats(self) -> None: ...
    def set_objects(self, account_id: str, namespace_id: str, count: int) -> None: ...
    def add_objects(self, account_id: str, namespace_id: str, delta: int) -> None: ...
    def set_growth(self, account_id: str, namespace_id: str, per_minute: float) -> None: ...
    def add_namespace(self, account_id: str, namespace: Mapping[str, Any]) -> str: ...
    def remove_namespace(self, account_id: str, namespace_id: str) -> None: ...
    def revoke_token(self, token: str) -> None: ...
    def set_token_status(self, token: str, status: str) -> None: ...


class Admin:
    """Answers the admin API by calling ``control``."""

    def __init__(self, control: Control) -> None:
        self._control = control

    def __call__(self, method: str, action: str, query_string: str, body: bytes) -> Response:
        try:
            if method == "GET":
                return self._get(action, {k: v[-1] for k, v in parse_qs(query_string).items()})
            if method != "POST":
                return _json(405, {"ok": False, "error": "use GET or POST"})
            return self._post(action, body)
        except (KeyError, ValueError, TypeError) as exc:
            text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            return _json(400, {"ok": False, "error": str(text)})

    def _get(self, action: str, query: dict[str, str]) -> Response:
        control = self._control
        if action == "stats":
            return _json(200, control.stats())
        if action == "info":
            return _json(200, control.info())
        if action == "expected":
            objects, stored = control.expected(query["account_id"], query["namespace_id"])
            return _json(200, {"objects": objects, "with_stored_data": stored})
        return _json(404, {"ok": False, "error": f"no admin endpoint GET {action}"})

    def _post(self, action: str, body: bytes) -> Response:
        data = json.loads(body or b"{}")
        if not isinstance(data, dict):
            raise ValueError("the body must be a JSON object")
        control = self._control
        result: dict[str, Any] = {"ok": True}
        if action == "inject":
            params = dict(data)
            kind = params.pop("fault")
            control.inject(kind, **params)
        elif action == "clear_faults":
            control.clear_faults()
        elif action == "reset_stats":
            control.reset_stats()
        elif action == "objects":
            result.update(self._objects(data))
        elif action == "namespaces/add":
            result["id"] = control.add_namespace(data["account_id"], data["namespace"])
        elif action == "namespaces/delete":
            control.remove_namespace(data["account_id"], data["namespace_id"])
        elif action == "tokens/revoke":
            control.revoke_token(data["token"])
        elif action == "tokens/status":
            control.set_token_status(data["token"], data["status"])
        else:
            return _json(404, {"ok": False, "error": f"no admin endpoint POST {action}"})
        return _json(200, result)

    def _objects(self, data: dict[str, Any]) -> dict[str, Any]:
        """``POST objects``: set, add to or set the growth of a namespace's count."""
        control = self._control
        a, n = data["account_id"], data["namespace_id"]
        if "count" in data:
            control.set_objects(a, n, _int(data["count"], "count"))
        if "add" in data:
            control.add_objects(a, n, _int(data["add"], "add"))
        if "growth_per_minute" in data:
            control.set_growth(a, n, float(data["growth_per_minute"]))
        objects, stored = control.expected(a, n)
        return {"objects": objects, "with_stored_data": stored}


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer")
    return value


def _json(status: int, data: dict[str, Any]) -> Response:
    return Response(status, json.dumps(data, separators=(",", ":")).encode())
