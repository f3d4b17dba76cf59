"""Load rate-limit config: one YAML file or a directory of them, in envoyproxy/ratelimit's format.

`parse_config` is pure (texts in, RateLimitConfig or ConfigErrors out); `load_config` reads the
files first. Every problem of every file is reported at once, each as `FILE:LINE:COL: path: message`.
Domains must be unique across files, unless `merge_domains` (envoyproxy/ratelimit's MERGE_DOMAIN_CONFIG):
then the files of one domain add up, and only a top-level descriptor given in two of them is an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pavilion.config_files import Source, read_sources
from pavilion.errors import ConfigError, ConfigErrors, Location
from pavilion.yaml_nodes import parse_documents
from ratelimit.config_load import DocumentReader
from ratelimit.matching import RateLimitConfig
from ratelimit.rules import Rule


def load_config(path: str | Path, *, merge_domains: bool = False) -> RateLimitConfig:
    """The rules of `path` (a file, or a directory searched recursively in sorted order); ConfigErrors if bad."""
    return parse_config(read_sources(path), merge_domains=merge_domains)


def parse_config(sources: Sequence[Source], *, merge_domains: bool = False) -> RateLimitConfig:
    errors: list[ConfigError] = []
    rules: list[Rule] = []
    placeholders: list[tuple[str, tuple[tuple[str, str | None], ...]]] = []
    domains: dict[str, Location] = {}
    top_level: dict[tuple[str, str, str | None], Location] = {}  # (domain, key, value): where first given
    for source in sources:
        try:
            documents = parse_documents(source.text, source.name)
        except ConfigError as exc:
            errors.append(exc)
            continue
        if not documents:
            errors.append(ConfigError("config file cannot have empty domain (the file is empty)",
                                      location=Location(source.name)))
        for document in documents:
            reader = DocumentReader(source.name)
            found = reader.read_root(document)
            errors.extend(reader.errors)
            if found is None:
                continue
            domain, where = found
            if domain in domains and not merge_domains:
                errors.append(ConfigError(f"duplicate domain '{domain}' in config file (first at {domains[domain]})",
                                          location=where, path="domain"))
                continue
            domains.setdefault(domain, where)
            clashes = [ConfigError(f"duplicate descriptor composite key '{_shown(domain, key, value)}' "
                                   f"(first at {top_level[(domain, key, value)]})", location=loc, path=path)
                       for (key, value), (loc, path) in reader.top_level.items() if (domain, key, value) in top_level]
            if clashes:
                errors.extend(clashes)
                continue
            top_level.update({(domain, key, value): loc for (key, value), (loc, _) in reader.top_level.items()})
            rules.extend(reader.rules)
            placeholders.extend(reader.placeholders)
    if errors:
        raise ConfigErrors(errors)
    config = RateLimitConfig(rules, files=[source.name for source in sources], placeholders=placeholders)
    for domain in domains:
        config.add_domain(domain)
    return config


def _shown(domain: str, key: str, value: str | None) -> str:
    return f"{domain}.{key}" if value is None else f"{domain}.{key}_{value}"


def parse_config_text(text: str, name: str = "<string>") -> RateLimitConfig:
    """One YAML text as a whole config; for tests and tools."""
    return parse_config([Source(name, text)])


__all__ = ["RateLimitConfig", "Source", "load_config", "parse_config", "parse_config_text"]
