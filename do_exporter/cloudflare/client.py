"""The Cloudflare endpoints the exporter reads: REST lists (page numbers), object walks
(cursors), token verification, and the GraphQL POST.

Each method asks :class:`~.transport.Transport` for pages and judges them with the pure
parsers of :mod:`.parsers`; the client knows nothing about Prometheus (it reports to a
:class:`~do_exporter.observe.RequestObserver`) nor about analytics: :meth:`graphql`
returns the decoded answer, which :mod:`do_exporter.analytics` parses.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NoReturn

import requests
import structlog

from ..apifacts import OBJECTS_PER_PAGE, RATE_LIMIT_WINDOW
from ..model import Account, Namespace, ObjectCount
from ..observe import INVALID_RESPONSE, RequestObserver
from ..options import DEFAULT_GRAPHQL_RATE_LIMIT
from ..ratelimit import Lane, RateLimiter
from ..secrets import Secret
from .budget import ByteBudget
from .errors import CloudflareAPIError, RetryPolicy
from .parsers import (
    ACCOUNT_OWNED,
    INVALID_TOKEN,
    OBJECTS_PROBE_LIMIT,
    USER_OWNED,
    GraphQLAnswer,
    NamespaceProbe,
    ObjectsPage,
    TokenStatus,
    as_int,
    cap_label,
    is_api_id,
    list_parser,
    objects_decode_cost,
    parse_graphql,
    parse_namespace,
    parse_objects_page,
    parse_token_status,
    valid_text,
    wrong_kind,
)
from .transport import MAX_BODY_BYTES, Transport

log = structlog.get_logger("do_exporter.cloudflare")

NAMESPACES_PER_PAGE = 1000  # the API's maximum
ACCOUNTS_PER_PAGE = 50  # the API's maximum for /accounts
MAX_LIST_PAGES = 100  # namespaces: 100,000 at 1,000 a page (an account holds at most ~500)
MAX_ACCOUNT_PAGES = 2_000  # GET /accounts: 100,000 accounts at 50 a page
MAX_OBJECT_PAGES = 100_000  # cursor walk guard: 1 billion objects at 10,000 a page
GRAPHQL_RATE_LIMIT = DEFAULT_GRAPHQL_RATE_LIMIT  # queries per 5 minutes (--graphql-rate-limit)


class CloudflareClient:
    """Lists accounts, namespaces and objects, paced by a shared :class:`RateLimiter`."""

    def __init__(
        self,
        session: requests.Session,
        base_url: str,
        token: Secret,
        *,
        limiter: RateLimiter,
        graphql_limiter: RateLimiter | None = None,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        retry: RetryPolicy | None = None,
        observer: RequestObserver | None = None,
        cancel: threading.Event | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_object_pages: int = MAX_OBJECT_PAGES,
        max_body_bytes: int = MAX_BODY_BYTES,
        request_deadline: float | None = None,
        request_budget: float | None = None,
        byte_budget: ByteBudget | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._token = token
        self._transport = Transport(
            session,
            base_url,
            token,
            limiter=limiter,
            timeout=timeout,
            connect_timeout=connect_timeout,
            retry=retry,
            observer=observer,
            cancel=cancel,
            rng=rng,
            clock=clock,
            max_body_bytes=max_body_bytes,
            request_deadline=request_deadline,
            request_budget=request_budget,
            byte_budget=byte_budget,
        )
        self._request = self._transport.request
        self._observer = self._transport.observer
        # Cloudflare's GraphQL budget (300 queries per 5 minutes per user) is its own.
        self._graphql_limiter = graphql_limiter or RateLimiter(
            GRAPHQL_RATE_LIMIT, RATE_LIMIT_WINDOW, cancel=cancel
        )
        self._max_object_pages = max_object_pages

    def __repr__(self) -> str:
        return f"CloudflareClient(base_url={self._base!r}, token={self._token!r})"

    @property
    def requests_made(self) -> int:
        """HTTP attempts so far (for the poll summary log line)."""
        return self._transport.requests

    @property
    def latency(self) -> float | None:
        """Moving average of the seconds an answered request took (None before the first)."""
        return self._transport.latency

    # -- public API -----------------------------------------------------------------------

    def list_accounts(self) -> list[Account]:
        """Every account the token can read (``GET /accounts``), de-duplicated by id.

        Items whose id is not 32 lowercase hex, or whose name is not valid text, are
        skipped (one warning, one ``invalid_response`` error counted per list); names are
        capped like label values.
        """
        accounts: list[Account] = []
        skipped = 0
        for item in self._pages("accounts", "/accounts", ACCOUNTS_PER_PAGE, MAX_ACCOUNT_PAGES, {}):
            acc_id = item.get("id")
            name = item.get("name")
            if not is_api_id(acc_id) or (isinstance(name, str) and not valid_text(name)):
                skipped += 1
                continue
            name, cut = cap_label(name) if isinstance(name, str) else ("", False)
            if cut:
                self._observer.label_truncated()
            accounts.append(Account(acc_id, name))
        self._note_skipped("accounts", skipped, {})
        return accounts

    def list_namespaces(self, account_id: str) -> list[Namespace]:
        """Every Durable Objects namespace of an account, page by page, de-duplicated by id.

        Items whose id is missing or not 32 lowercase hex, or with a text field that is not
        valid text, are skipped (one warning, one ``invalid_response`` error counted per
        list); text fields are capped at :data:`~.parsers.MAX_LABEL_VALUE` characters.
        """
        context = {"account_id": account_id}
        path = f"/accounts/{self._path_id('namespaces', account_id, context)}"
        path += "/workers/durable_objects/namespaces"
        result: list[Namespace] = []
        skipped = 0
        pages = self._pages("namespaces", path, NAMESPACES_PER_PAGE, MAX_LIST_PAGES, context)
        for item in pages:
            ns = parse_namespace(item, self._observer.label_truncated)
            if ns is None:
                skipped += 1
            else:
                result.append(ns)
        self._note_skipped("namespaces", skipped, context)
        return result

    def count_objects(
        self,
        account_id: str,
        namespace_id: str,
        progress: Callable[[int], None] | None = None,
        *,
        max_pages: int | None = None,
        lane: Callable[[int], Lane] | None = None,
    ) -> ObjectCount:
        """Walk every page of a namespace's objects, keeping only the counts.

        Memory stays flat: one page at a time (the loop guard keeps an 8-byte hash per
        page, about 8 MB at the page cap). A cursor seen before (a server that repeats
        itself) or more than ``max_object_pages`` pages ends the walk with an error rather
        than a loop or a partial count; ``max_pages`` lowers that bound for this walk (the
        poller derives it from the namespace's last known size). ``progress`` is called with
        the pages read so far; ``lane(pages read)`` says where the next page queues in the
        rate limiter (default: :attr:`Lane.FRESH`).
        """
        context = {"account_id": account_id, "namespace_id": namespace_id}
        path = (
            f"/accounts/{self._path_id('objects', account_id, context)}"
            "/workers/durable_objects/namespaces/"
            f"{self._path_id('objects', namespace_id, context)}/objects"
        )
        limit = (
            self._max_object_pages if max_pages is None else min(max_pages, self._max_object_pages)
        )
        objects = with_data = pages = 0
        cursor: str | None = None
        seen: set[int] = set()
        while True:
            params: dict[str, str | int] = {"limit": OBJECTS_PER_PAGE}
            if cursor:
                params["cursor"] = cursor
            page = self._request(
                "objects",
                path,
                params,
                context,
                parse_objects_page,
                lane(pages) if lane is not None else Lane.FRESH,
                decode_cost=objects_decode_cost,
            )
            pages += 1
            objects += page.count
            with_data += page.with_stored_data
            if progress is not None:
                progress(pages)
            if page.cursor is None or page.count == 0:
                return ObjectCount(objects, with_data, pages)
            digest = int.from_bytes(hashlib.blake2b(page.cursor.encode(), digest_size=8).digest())
            if digest in seen:
                self._fail_walk("objects", "the API repeated a cursor (loop guard)", context)
            if pages >= limit:
                self._fail_walk("objects", f"more than {limit} pages (walk guard)", context)
            seen.add(digest)
            cursor = page.cursor

    def verify_token(
        self, account_ids: Sequence[str] = (), *, owner: str | None = None
    ) -> TokenStatus:
        """What the API says the token is: its status, owner and expiry (one or more
        ``verify`` requests; verify checks no permission).

        ``GET /user/tokens/verify`` first; it answers an account-owned token with HTTP 401 /
        code 1000, so then ``GET /accounts/{id}/tokens/verify`` for each of ``account_ids``
        until one knows it. ``owner=ACCOUNT_OWNED`` (known from an earlier answer) tries the
        account endpoints first. ``status`` is :data:`INVALID_TOKEN` when none knows it.
        Raises :class:`CloudflareAPIError` when an endpoint fails otherwise.
        """
        user: list[tuple[str, dict[str, str], str | None]] = [("/user/tokens/verify", {}, None)]
        accounts: list[tuple[str, dict[str, str], str | None]] = [
            (f"/accounts/{a}/tokens/verify", {"account_id": a}, a)
            for a in dict.fromkeys(account_ids)
            if is_api_id(a)
        ]
        order = accounts + user if owner == ACCOUNT_OWNED else user + accounts
        for path, context, account_id in order:
            kind = USER_OWNED if account_id is None else ACCOUNT_OWNED

            def parse(
                status: int,
                body: bytes,
                cf_ray: str | None,
                kind: str = kind,
                a: str | None = account_id,
            ) -> TokenStatus:
                return parse_token_status(status, body, cf_ray, owner=kind, account_id=a)

            try:
                return self._request("verify", path, {}, context, parse, Lane.CONTROL)
            except CloudflareAPIError as exc:
                if not wrong_kind(exc):
                    raise
        return TokenStatus(INVALID_TOKEN)

    def probe_namespaces(self, account_id: str) -> NamespaceProbe:
        """One request: the first page of an account's namespaces with ``per_page=1``
        (whether the token may list them, how many there are, one to probe objects with)."""
        context = {"account_id": account_id}
        path = f"/accounts/{self._path_id('namespaces', account_id, context)}"
        path += "/workers/durable_objects/namespaces"
        params = {"page": 1, "per_page": 1}
        parse = list_parser("namespaces")
        env, items = self._request("namespaces", path, params, context, parse, Lane.CONTROL)
        info = env.result_info or {}
        total = as_int(info.get("total_count"))
        if total is None and as_int(info.get("per_page")) == 1:
            total = as_int(info.get("total_pages"))
        found = (parse_namespace(item, self._observer.label_truncated) for item in items)
        return NamespaceProbe(total, next((n for n in found if n is not None), None))

    def probe_objects(self, account_id: str, namespace_id: str) -> ObjectsPage:
        """One request: the smallest first page of a namespace's objects."""
        context = {"account_id": account_id, "namespace_id": namespace_id}
        path = (
            f"/accounts/{self._path_id('objects', account_id, context)}"
            "/workers/durable_objects/namespaces/"
            f"{self._path_id('objects', namespace_id, context)}/objects"
        )
        params = {"limit": OBJECTS_PROBE_LIMIT}
        return self._request(
            "objects",
            path,
            params,
            context,
            parse_objects_page,
            Lane.CONTROL,
            decode_cost=objects_decode_cost,
        )

    def graphql(self, account_id: str, body: Mapping[str, Any]) -> GraphQLAnswer:
        """One ``POST /graphql``: the decoded answer (see :mod:`do_exporter.analytics`,
        whose ``parse_analytics(answer.document, status=answer.status)`` judges it).

        Paced by the GraphQL limiter (Cloudflare's GraphQL budget is separate from the REST
        one); 429 and 5xx are retried like any request. Any other answer comes back decoded,
        errors in a 200 and 4xx included. Raises :class:`CloudflareAPIError` when no answer
        came (transport, retries exhausted) or it is not JSON.
        """
        context = {"account_id": account_id}
        return self._request(
            "graphql",
            "/graphql",
            {},
            context,
            parse_graphql,
            Lane.CONTROL,
            json_body=body,
            limiter=self._graphql_limiter,
        )

    # -- pagination -----------------------------------------------------------------------

    def _pages(
        self,
        endpoint: str,
        path: str,
        per_page: int,
        max_pages: int,
        context: Mapping[str, str],
    ) -> Iterator[dict[str, Any]]:
        """Yield the items of a page-number list, de-duplicated by ``id``.

        Where the list ends is judged by position (items received, whatever their ids): at
        ``result_info.total_pages`` when the API gives it; without it, once
        ``result_info.total_count`` items were received; without either, on a short or
        empty page (short against the page size the server says it used, which may be
        smaller than the one asked for). De-duplication is separate: an id seen before, on
        this page or an earlier one, is dropped; items without a string id are passed on
        for the caller to judge. A page that is empty, or whose ids were all seen before,
        while more are announced (a server ignoring ``page``) is an error, not a short list;
        more than ``max_pages`` pages is an error too.
        """
        seen: set[str] = set()
        received = duplicates = 0
        page = 1
        parse = list_parser(endpoint)
        while True:
            params = {"page": page, "per_page": per_page}
            env, items = self._request(endpoint, path, params, context, parse, Lane.CONTROL)
            fresh = with_id = 0
            for item in items:
                item_id = item.get("id")
                if isinstance(item_id, str):
                    with_id += 1
                    if item_id in seen:
                        duplicates += 1
                        continue
                    seen.add(item_id)
                    fresh += 1
                yield item
            received += len(items)
            info = env.result_info or {}
            total_pages = as_int(info.get("total_pages"))
            total_count = as_int(info.get("total_count"))
            page_size = as_int(info.get("per_page")) or per_page
            if total_pages is not None:
                more = page < total_pages
            elif total_count is not None:
                more = received < total_count
            else:
                more = len(items) >= page_size
            if more and (not items or (with_id and not fresh)):
                # The API says there is more but repeats itself: a list we cannot trust.
                self._fail_walk(endpoint, f"page {page} repeated an earlier page", context)
            if not more or not items:
                break
            if page >= max_pages:
                self._fail_walk(endpoint, f"more than {max_pages} pages", context)
            page += 1
        if duplicates:
            log.warning("duplicate ids dropped", endpoint=endpoint, count=duplicates, **context)

    def _note_skipped(self, endpoint: str, skipped: int, context: Mapping[str, str]) -> None:
        if skipped:
            self._observer.api_error(endpoint, INVALID_RESPONSE)
            log.warning(
                "invalid items skipped (id not 32 hex, or text not valid)",
                endpoint=endpoint,
                count=skipped,
                **context,
            )

    def _path_id(self, endpoint: str, value: str, context: Mapping[str, str]) -> str:
        """``value`` if it is a 32-hex id fit for a request path, else an error (no request)."""
        if not is_api_id(value):
            self._fail_walk(endpoint, "not a 32-hex id; not put in a request path", context)
        return value

    def _fail_walk(self, endpoint: str, message: str, context: Mapping[str, str]) -> NoReturn:
        self._observer.api_error(endpoint, INVALID_RESPONSE)
        log.error("API pagination error", endpoint=endpoint, error=message, **context)
        raise CloudflareAPIError(message, endpoint=endpoint, kind=INVALID_RESPONSE)
