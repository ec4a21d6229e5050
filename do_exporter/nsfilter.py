"""The namespace filter (``--namespace-include`` / ``--namespace-exclude``).

A namespace is kept when the include expression (if any) fully matches its name or its
class, and the exclude expression (if any) fully matches neither. A kept namespace is listed,
walked and reported; one filtered out is skipped entirely: no object walk, no analytics row,
no series. Namespace-level totals per account (``namespaces``, ``sqlite_namespaces``) count
every namespace the API lists, filtered or not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .model import Listed, Namespace


@dataclass(frozen=True)
class NamespaceFilter:
    include: re.Pattern[str] | None = None
    exclude: re.Pattern[str] | None = None

    @property
    def active(self) -> bool:
        return self.include is not None or self.exclude is not None

    def allows(self, name: str | None, class_name: str | None) -> bool:
        texts = [t for t in (name, class_name) if t]
        if self.include is not None and not any(self.include.fullmatch(t) for t in texts):
            return False
        return not (self.exclude is not None and any(self.exclude.fullmatch(t) for t in texts))

    def listed(self, namespaces: Iterable[Namespace]) -> Listed:
        """A list after the filter, with the totals of everything listed."""
        listed = tuple(namespaces)
        if not self.active:
            return Listed(listed)
        kept = tuple(ns for ns in listed if self.allows(ns.name, ns.class_name))
        sqlite = sum(1 for ns in listed if ns.use_sqlite)
        return Listed(kept, total=len(listed), sqlite=sqlite)


ALL = NamespaceFilter()
