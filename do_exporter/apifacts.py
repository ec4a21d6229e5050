"""Facts about Cloudflare's API that several modules rely on, declared once (data only).

Sources: Cloudflare's API documentation and OpenAPI spec (docs/architecture.md, "The
Cloudflare API, as we rely on it").
"""

from __future__ import annotations

RATE_LIMIT_WINDOW = 300.0  # seconds: the REST (and GraphQL) budget window, per user
OBJECTS_PER_PAGE = 10_000  # the objects list's largest page, asked for by every walk
PER_SECOND_LIMIT = 100  # our cap per second (Cloudflare allows 200 per second per IP)
