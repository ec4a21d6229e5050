"""A bounded YAML loader for the exporter's own files (``--config.file``, ``--web.config.file``).

PyYAML's safe loader, made to refuse what can crash or blow up a process before any value is
used:

- anchors and aliases (``&a`` / ``*a``) are refused outright: an alias can expand a small
  document into gigabytes (a 519-byte file grew past 1.5 GiB), and these files never need them;
- nesting deeper than :data:`MAX_DEPTH` (deep nesting overflows the recursive composer);
- a key that is not a plain scalar (a list or mapping used as a key), and a key given twice
  (PyYAML would keep the last one silently);
- an integer of more than :data:`MAX_INT_DIGITS` digits (Python refuses to convert more than
  4,300 digits, with a ``ValueError`` from deep inside the constructor).

Every problem is a :class:`YamlError` whose ``str()`` is one line with the line and column.
"""

from __future__ import annotations

from typing import Any, cast

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode

MAX_DEPTH = 32
MAX_INT_DIGITS = 64


class YamlError(ValueError):
    """The text is not a document these files accept; ``str()`` is one line."""


class _BoundedLoader(yaml.SafeLoader):
    _depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        event = cast(Any, self).peek_event()  # untyped in PyYAML's stubs
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise ConstructorError(
                None, None, "YAML anchors and aliases (&, *) are not accepted", event.start_mark
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ConstructorError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark
                )
            return cast(Node, super().compose_node(parent, index))  # None only past the end
        finally:
            self._depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode):
                raise ConstructorError(
                    None, None, "a key must be a plain value, not a list or mapping",
                    key_node.start_mark,
                )  # fmt: skip
            key = self.construct_object(key_node)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable scalar from an explicit tag
                raise ConstructorError(
                    None, None, "a key must be a plain value", key_node.start_mark
                ) from None
            if duplicate:
                raise ConstructorError(
                    None, None, f"key {_short(key)} given twice", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: ScalarNode) -> int:
        digits = sum(ch.isalnum() for ch in str(node.value))
        if digits > MAX_INT_DIGITS:
            raise ConstructorError(
                None, None, f"an integer of more than {MAX_INT_DIGITS} digits", node.start_mark
            )
        return super().construct_yaml_int(node)


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)


def load(text: str) -> Any:
    """The one document in ``text``, or :class:`YamlError` (one line, never a traceback)."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise YamlError(_problem(exc)) from None
    except (RecursionError, MemoryError, ValueError, TypeError, OverflowError) as exc:
        raise YamlError(f"cannot be read ({type(exc).__name__})") from None


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


def _problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(str(exc.problem or exc.context or "syntax error").split())[:200]
        if mark is not None:
            return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
        return problem
    return type(exc).__name__
