"""Read one envoyproxy/ratelimit YAML document into `Rule`s, collecting every problem with its place.

The YAML tree with locations comes from pavilion.yaml_nodes (shared with the route YAML
loader). Scalars where envoyproxy/ratelimit expects a string (`key`, `value`, `name`, `domain`) may
be written as numbers or booleans, as Go's yaml.v2 reads them into string fields: `value: 429` is
"429". They are read as YAML 1.2 numbers first, so `010` becomes "10" and `1.50` "1.5": quote such
values to keep them as written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pavilion.errors import ConfigError, Location
from pavilion.yaml_nodes import Key, Mapping, Node, Scalar, Sequence, describe, join, suggest
from ratelimit.rules import ALGORITHMS, FIXED_WINDOW, ON_BACKEND_ERROR, TOKEN_BUCKET, UNIT_SECONDS, Limit, Rule

ROOT_KEYS = ("domain", "descriptors")
DESCRIPTOR_KEYS = (
    "key", "value", "rate_limit", "rate_limits", "descriptors", "shadow_mode", "detailed_metric", "value_to_metric",
    "share_threshold", "on_backend_error",
)
LIMIT_KEYS = ("unit", "requests_per_unit", "unit_multiplier", "algorithm", "burst", "name", "replaces")
RATE_LIMIT_KEYS = ("unlimited", *LIMIT_KEYS)
MAX_UINT32 = 2**32 - 1
# YAML 1.1 spellings Go's yaml.v2 reads as booleans; envoyproxy/ratelimit configs may use them.
_TRUE = ("y", "yes", "on")
_FALSE = ("n", "no", "off")


@dataclass
class DocumentReader:
    """Walks one document. `errors` collects problems; `rules` what was valid."""

    file: str
    errors: list[ConfigError] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    placeholders: list[tuple[str, tuple[tuple[str, str | None], ...]]] = field(default_factory=list)
    # Each top-level (key, value): where it was written and its field path (for merging domains).
    top_level: dict[tuple[str, str | None], tuple[Location, str]] = field(default_factory=dict)

    def problem(self, message: str, loc: Location, path: str) -> None:
        self.errors.append(ConfigError(message, location=loc, path=path))

    def read_root(self, node: Node) -> tuple[str, Location] | None:
        """Read a whole document; returns its domain and where it was written (None if unusable)."""
        fields = self.fields(node, ROOT_KEYS, "", "a config file")
        if fields is None:
            return None
        entry = fields.get("domain")
        domain = self.text(entry[1], "domain") if entry else ""
        if domain is None:
            return None
        where = entry[1].loc if entry else node.loc
        if not domain:
            self.problem("config file cannot have empty domain", where, "domain")
            return None
        if "descriptors" in fields:
            self.descriptors(fields["descriptors"][1], domain, (), "descriptors")
        return domain, where

    def descriptors(self, node: Node, domain: str, parent: tuple[tuple[str, str | None], ...], path: str,
                    shared: tuple[int, ...] = (), valued: tuple[int, ...] = ()) -> None:
        """`shared` and `valued`: the depths above that set share_threshold and value_to_metric."""
        if isinstance(node, Scalar) and node.value is None:
            return
        if not isinstance(node, Sequence):
            self.problem(f"expected a list of descriptors, got {describe(node)}", node.loc, path)
            return
        seen: dict[tuple[str, str | None], Location] = {}
        for index, item in enumerate(node.items):
            here = f"{path}[{index}]"
            fields = self.fields(item, DESCRIPTOR_KEYS, here, "a descriptor")
            if fields is None:
                continue
            key = self.text(fields["key"][1], join(here, "key")) if "key" in fields else ""
            if key is None:
                continue
            if not key:
                where = fields["key"][1].loc if "key" in fields else item.loc
                self.problem("descriptor has empty key", where, join(here, "key"))
                continue
            value = self.text(fields["value"][1], join(here, "value")) if "value" in fields else None
            value = value or None  # envoyproxy/ratelimit: an empty value is no value
            key_path = (*parent, (key, value))
            shown = ".".join([domain, *(k if v is None else f"{k}_{v}" for k, v in key_path)])
            if (key, value) in seen:
                self.problem(f"duplicate descriptor composite key '{shown}' (first at {seen[(key, value)]})",
                             item.loc, here)
                continue
            seen[(key, value)] = item.loc
            if not parent:
                self.top_level[(key, value)] = (item.loc, here)
            depth = len(parent)
            item_shared, item_valued = shared, valued  # this descriptor's and those below it
            if self.flag(fields, "share_threshold", here):
                if value is None or not value.endswith("*"):
                    self.problem(f"share_threshold can only be used with a wildcard value (ending with '*'), "
                                 f"but '{shown}' has {'no value' if value is None else 'an exact one'}",
                                 fields["share_threshold"][0].loc, join(here, "share_threshold"))
                else:
                    item_shared = (*shared, depth)
            if self.flag(fields, "value_to_metric", here):
                item_valued = (*valued, depth)
            if not self.rule(fields, domain, key_path, item.loc, here, item_shared, item_valued):
                self.placeholders.append((domain, key_path))
            if "descriptors" in fields:
                self.descriptors(fields["descriptors"][1], domain, key_path, join(here, "descriptors"), item_shared,
                                 item_valued)

    def rule(self, fields: dict[str, tuple[Key, Node]], domain: str, key_path: tuple[tuple[str, str | None], ...],
             loc: Location, path: str, shared: tuple[int, ...] = (), valued: tuple[int, ...] = ()) -> bool:
        """Append the descriptor's rule, if it has a valid one; True if it did."""
        shadow = self.flag(fields, "shadow_mode", path)
        detailed = self.flag(fields, "detailed_metric", path)
        on_error = "allow"
        if "on_backend_error" in fields:
            node = fields["on_backend_error"][1]
            on_error = self.choice(node, ON_BACKEND_ERROR, join(path, "on_backend_error")) or "allow"
        for optional in ("rate_limit", "rate_limits"):
            entry = fields.get(optional)
            if entry is not None and isinstance(entry[1], Scalar) and entry[1].value is None:
                del fields[optional]  # `rate_limit:` with nothing: no limit, as Go's yaml.v2 reads it
        if "rate_limit" in fields and "rate_limits" in fields:
            self.problem("give either rate_limit or rate_limits, not both", fields["rate_limits"][0].loc,
                         join(path, "rate_limits"))
            return False
        limits: list[Limit] = []
        replaces: list[tuple[str, Location, str]] = []
        unlimited = False
        name: str | None = None
        if "rate_limit" in fields:
            node = fields["rate_limit"][1]
            sub = join(path, "rate_limit")
            block = self.fields(node, RATE_LIMIT_KEYS, sub, "a rate_limit block")
            if block is None:
                return False
            unlimited = self.flag(block, "unlimited", sub)
            name = self.name(block, sub)
            replaces = self.replaces(block, sub)
            if unlimited:
                for extra in ("unit", "unit_multiplier", "algorithm", "burst"):
                    if extra in block:
                        message = ("should not specify rate limit unit when unlimited" if extra == "unit"
                                   else f"{extra} has no meaning when unlimited")
                        self.problem(message, block[extra][0].loc, join(sub, extra))
                        return False
            else:
                limit = self.limit(block, node.loc, sub, name)
                if limit is None:
                    return False
                limits.append(limit)
        elif "rate_limits" in fields:
            node = fields["rate_limits"][1]
            sub = join(path, "rate_limits")
            if not isinstance(node, Sequence):
                self.problem(f"expected a list of limits, got {describe(node)}", node.loc, sub)
                return False
            if not node.items:
                self.problem("rate_limits needs at least one limit", node.loc, sub)
                return False
            ok = True
            for index, item in enumerate(node.items):
                here = f"{sub}[{index}]"
                block = self.fields(item, LIMIT_KEYS, here, "a limit")
                limit = self.limit(block, item.loc, here, self.name(block, here)) if block is not None else None
                if block is not None:
                    replaces.extend(self.replaces(block, here))
                ok = ok and limit is not None
                if limit is not None:
                    limits.append(limit)
            if not ok:
                return False
        else:
            return False
        names = {limit.name for limit in limits if limit.name} | ({name} if name else set())
        for replaced, where, at in replaces:
            if replaced in names:
                self.problem("replaces should not contain name of same descriptor", where, at)
                return False
        self.rules.append(Rule(
            domain=domain, key_path=key_path, limits=tuple(limits), unlimited=unlimited, shadow_mode=shadow,
            replaces=tuple(dict.fromkeys(r for r, _, _ in replaces)), detailed_metric=detailed, name=name,
            on_backend_error=on_error, share_threshold=shared, value_to_metric=valued, source=loc,
        ))
        return True

    def limit(self, block: dict[str, tuple[Key, Node]], loc: Location, path: str, name: str | None) -> Limit | None:
        if "unit" not in block:
            self.problem("invalid rate limit unit ''; give one of " + ", ".join(UNIT_SECONDS), loc, join(path, "unit"))
            return None
        unit = self.text(block["unit"][1], join(path, "unit"))
        if unit is None:
            return None
        if unit.lower() not in UNIT_SECONDS:
            self.problem(f"invalid rate limit unit '{unit}'; give one of {', '.join(UNIT_SECONDS)}"
                         f"{suggest(unit, list(UNIT_SECONDS))}", block["unit"][1].loc, join(path, "unit"))
            return None
        if "requests_per_unit" not in block:
            self.problem("requests_per_unit is missing (write 0 to refuse every request)", loc,
                         join(path, "requests_per_unit"))
            return None
        rate = self.integer(block["requests_per_unit"][1], 0, MAX_UINT32, join(path, "requests_per_unit"))
        multiplier: int | None = 1
        if "unit_multiplier" in block:
            multiplier = self.integer(block["unit_multiplier"][1], 1, MAX_UINT32, join(path, "unit_multiplier"))
        algorithm: str | None = FIXED_WINDOW
        if "algorithm" in block:
            algorithm = self.choice(block["algorithm"][1], ALGORITHMS, join(path, "algorithm"))
        burst: int | None = 0
        if "burst" in block:
            burst = self.integer(block["burst"][1], 0, MAX_UINT32, join(path, "burst"))
            if algorithm is not None and algorithm != TOKEN_BUCKET:
                self.problem(f"burst applies to algorithm token_bucket only, not {algorithm}",
                             block["burst"][0].loc, join(path, "burst"))
                return None
        if rate is None or multiplier is None or algorithm is None or burst is None:
            return None
        return Limit(unit=unit.lower(), requests_per_unit=rate, unit_multiplier=multiplier, algorithm=algorithm,
                     burst=burst, name=name)

    def name(self, block: dict[str, tuple[Key, Node]], path: str) -> str | None:
        if "name" not in block:
            return None
        return self.text(block["name"][1], join(path, "name")) or None

    def replaces(self, block: dict[str, tuple[Key, Node]], path: str) -> list[tuple[str, Location, str]]:
        if "replaces" not in block:
            return []
        node = block["replaces"][1]
        if isinstance(node, Scalar) and node.value is None:
            return []
        sub = join(path, "replaces")
        if not isinstance(node, Sequence):
            self.problem(f"expected a list of {{name: ...}}, got {describe(node)}", node.loc, sub)
            return []
        found: list[tuple[str, Location, str]] = []
        for index, item in enumerate(node.items):
            entry = self.fields(item, ("name",), f"{sub}[{index}]", "a replaces entry")
            if entry is None:
                continue
            replaced = self.text(entry["name"][1], f"{sub}[{index}].name") if "name" in entry else ""
            if not replaced:
                self.problem("should not have an empty replaces entry", item.loc, f"{sub}[{index}]")
                continue
            found.append((replaced, item.loc, f"{sub}[{index}]"))
        return found

    # Scalars and mappings.

    def fields(self, node: Node, allowed: tuple[str, ...], path: str, what: str) -> dict[str, tuple[Key, Node]] | None:
        """A mapping's entries by key; unknown and repeated keys reported (envoyproxy/ratelimit's validKeys)."""
        if not isinstance(node, Mapping):
            self.problem(f"expected {what} (a mapping), got {describe(node)}", node.loc, path)
            return None
        found: dict[str, tuple[Key, Node]] = {}
        for key, value in node.items:
            if key.text not in allowed:
                self.problem(f"unknown key '{key.text}'{suggest(key.text, allowed)}", key.loc, join(path, key.text))
            elif key.text in found:
                self.problem(f"key '{key.text}' is given twice (first at {found[key.text][0].loc})", key.loc,
                             join(path, key.text))
            else:
                found[key.text] = (key, value)
        return found

    def text(self, node: Node, path: str) -> str | None:
        if not isinstance(node, Scalar):
            self.problem(f"expected a string, got {describe(node)}", node.loc, path)
            return None
        value = node.value
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        # Go's yaml.v2 fills a string field with the scalar as written: `010` stays "010", `1.50` "1.50".
        return node.written or str(value)

    def integer(self, node: Node, minimum: int, maximum: int, path: str) -> int | None:
        value = node.value if isinstance(node, Scalar) else None
        if not isinstance(value, int) or isinstance(value, bool):
            self.problem(f"expected an integer, got {describe(node)}", node.loc, path)
            return None
        if not minimum <= value <= maximum:
            self.problem(f"must be between {minimum} and {maximum}", node.loc, path)
            return None
        return value

    def flag(self, fields: dict[str, tuple[Key, Node]], name: str, path: str) -> bool:
        if name not in fields:
            return False
        node = fields[name][1]
        value = node.value if isinstance(node, Scalar) else None
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        self.problem(f"expected true or false, got {describe(node)}", node.loc, join(path, name))
        return False

    def choice(self, node: Node, choices: tuple[str, ...], path: str) -> str | None:
        value = node.value if isinstance(node, Scalar) else None
        if not isinstance(value, str) or value not in choices:
            shown = repr(value) if isinstance(value, str) else describe(node)
            hint = suggest(value, choices) if isinstance(value, str) else ""
            self.problem(f"{shown} is not one of {', '.join(choices)}{hint}", node.loc, path)
            return None
        return value
