"""Which rule a request's descriptor matches: envoyproxy/ratelimit's lookup, precomputed per level.

At each level of the descriptor tree, for the request entry (key, value): the exact (key, value)
first, then a wildcard value (`prefix*`; the longest matching prefix wins), then the key alone.
A rule matches only when it sits at the depth of the request's last entry; the walk stops as soon
as a level has nothing further nested. Lookups are dict hits, so matching costs O(depth).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ratelimit.rules import Rule

KeyPath = tuple[tuple[str, str | None], ...]


@dataclass
class _Node:
    rule: Rule | None = None
    children: _Level | None = None


@dataclass
class _Level:
    exact: dict[tuple[str, str], _Node] = field(default_factory=dict)
    wildcard: dict[str, list[tuple[str, _Node]]] = field(default_factory=dict)  # key -> [(prefix, node)]
    key_only: dict[str, _Node] = field(default_factory=dict)

    def child(self, key: str, value: str | None) -> _Node:
        """The node for one configured (key, value), created on first use."""
        if value is None:
            return self.key_only.setdefault(key, _Node())
        if value.endswith("*"):
            prefix = value[:-1]
            bucket = self.wildcard.setdefault(key, [])
            for existing, node in bucket:
                if existing == prefix:
                    return node
            node = _Node()
            bucket.append((prefix, node))
            bucket.sort(key=lambda item: len(item[0]), reverse=True)
            return node
        return self.exact.setdefault((key, value), _Node())

    def find(self, key: str, value: str) -> _Node | None:
        node = self.exact.get((key, value))
        if node is not None:
            return node
        for prefix, candidate in self.wildcard.get(key, ()):
            if value.startswith(prefix):
                return candidate
        return self.key_only.get(key)


class RateLimitConfig:
    """Every domain's rules, with lookup tables built once. Immutable after construction."""

    def __init__(self, rules: Iterable[Rule], files: Sequence[str] = (),
                 placeholders: Iterable[tuple[str, KeyPath]] = ()) -> None:
        """`placeholders` are (domain, key path) of descriptors without a limit: they still take part
        in matching, so a key-and-value descriptor with no limit shields its value from the key-only
        rule beside it (envoyproxy/ratelimit's "effectively whitelisted")."""
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.files: tuple[str, ...] = tuple(files)
        self._domains: dict[str, _Level] = {}
        for domain, key_path in placeholders:
            self._node(domain, key_path)
        for rule in self.rules:
            node = self._node(rule.domain, rule.key_path)
            if node.rule is not None:
                raise ValueError(f"two rules for {rule.stats_key}")  # the loader reports it with its line first
            node.rule = rule

    def _node(self, domain: str, key_path: KeyPath) -> _Node:
        level = self._domains.setdefault(domain, _Level())
        node = _Node()
        for depth, (key, value) in enumerate(key_path):
            node = level.child(key, value)
            if depth < len(key_path) - 1:
                if node.children is None:
                    node.children = _Level()
                level = node.children
        return node

    @property
    def domains(self) -> frozenset[str]:
        return frozenset(self._domains)

    def has_domain(self, domain: str) -> bool:
        return domain in self._domains

    def add_domain(self, domain: str) -> None:
        """Make `domain` known even without rules (a file with an empty descriptor list)."""
        self._domains.setdefault(domain, _Level())

    def match(self, domain: str, entries: Sequence[tuple[str, str]]) -> Rule | None:
        level = self._domains.get(domain)
        if level is None or not entries:
            return None
        last = len(entries) - 1
        for depth, (key, value) in enumerate(entries):
            node = level.find(key, value)
            if node is None:
                return None
            if depth == last:
                return node.rule
            if node.children is None:
                return None
            level = node.children
        return None
