from __future__ import annotations

import pytest

from controlplane.config.hosts import covers


@pytest.mark.parametrize(("pattern", "domain", "expected"), [
    ("*", "api.example.com", True),
    ("*", "*.example.com", True),
    ("api.example.com", "api.example.com", True),
    ("api.example.com", "web.example.com", False),
    ("api.example.com", "*", False),
    ("*.example.com", "api.example.com", True),
    ("*.example.com", "a.b.example.com", True),
    ("*.example.com", ".example.com", False),  # Envoy's wildcard stands for one character or more
    ("*.example.com", "example.com", False),
    ("*.example.com", "*.b.example.com", True),
    ("*.b.example.com", "*.example.com", False),
    ("*example.com", "*.example.com", True),
    ("api.*", "api.example.com", True),
    ("api.*", "api.", False),
    ("api.*", "api.v1.*", True),
    ("api.v1.*", "api.*", False),
    ("*.example.com", "api.*", False),
    ("api.*", "*.example.com", False),
])
def test_covers(pattern: str, domain: str, expected: bool) -> None:
    assert covers(pattern, domain) is expected
