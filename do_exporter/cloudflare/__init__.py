"""The Cloudflare API client, one concept per module (docs/architecture.md):

- :mod:`.errors`: :class:`CloudflareAPIError`, the retry policy, bounded error labels;
- :mod:`.parsers`: pure parsers (envelopes, namespaces, object pages, token verification);
- :mod:`.transport`: one request with retries, deadlines, redirects refused;
  :mod:`.body` (capped, inflated reading), :mod:`.budget` (the process-wide byte budget),
  :mod:`.watchdog` (the total deadline of an attempt);
- :mod:`.client`: the endpoints (REST pagination, object walks, verify, GraphQL POST).

What other modules import is re-exported here.
"""

from __future__ import annotations

from ..apifacts import OBJECTS_PER_PAGE
from ..observe import INVALID_RESPONSE, TRANSPORT, NullObserver, RequestObserver
from .budget import DEFAULT_BUDGET_BYTES, ByteBudget
from .client import (
    ACCOUNTS_PER_PAGE,
    GRAPHQL_RATE_LIMIT,
    MAX_OBJECT_PAGES,
    NAMESPACES_PER_PAGE,
    CloudflareClient,
)
from .errors import (
    KNOWN_CODES,
    OTHER,
    CloudflareAPIError,
    RetryPolicy,
    error_code_label,
)
from .parsers import (
    ACCOUNT_OWNED,
    INVALID_TOKEN,
    MAX_LABEL_VALUE,
    TOKEN_STATUSES,
    TRUNCATED_MARKER,
    USER_OWNED,
    GraphQLAnswer,
    NamespaceProbe,
    ObjectsPage,
    TokenStatus,
    cap_label,
    is_api_id,
    parse_envelope,
    parse_namespace,
    parse_objects_page,
    parse_ratelimit,
    parse_retry_after,
    parse_token_status,
    valid_text,
)
from .transport import MAX_BODY_BYTES, MAX_PAUSE, PROCESS_BUDGET

__all__ = [
    "ACCOUNTS_PER_PAGE",
    "ACCOUNT_OWNED",
    "DEFAULT_BUDGET_BYTES",
    "GRAPHQL_RATE_LIMIT",
    "INVALID_RESPONSE",
    "INVALID_TOKEN",
    "KNOWN_CODES",
    "MAX_BODY_BYTES",
    "MAX_LABEL_VALUE",
    "MAX_OBJECT_PAGES",
    "MAX_PAUSE",
    "NAMESPACES_PER_PAGE",
    "OBJECTS_PER_PAGE",
    "OTHER",
    "PROCESS_BUDGET",
    "TOKEN_STATUSES",
    "TRANSPORT",
    "TRUNCATED_MARKER",
    "USER_OWNED",
    "ByteBudget",
    "CloudflareAPIError",
    "CloudflareClient",
    "GraphQLAnswer",
    "NamespaceProbe",
    "NullObserver",
    "ObjectsPage",
    "RequestObserver",
    "RetryPolicy",
    "TokenStatus",
    "cap_label",
    "error_code_label",
    "is_api_id",
    "parse_envelope",
    "parse_namespace",
    "parse_objects_page",
    "parse_ratelimit",
    "parse_retry_after",
    "parse_token_status",
    "valid_text",
]
