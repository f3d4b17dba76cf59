"""The `redis+sentinel://` URL both services take (pavilion.sentinel_url)."""

from __future__ import annotations

import re

import pytest

from pavilion.sentinel_url import SentinelUrl, is_sentinel_url, parse_sentinel_url


def test_every_part_is_read() -> None:
    url = parse_sentinel_url("redis+sentinel://app:p%40ss@10.0.0.1:26380,sentinel-b/orders/3?sentinel_password=sp")
    assert url == SentinelUrl(master_name="orders", sentinels=(("10.0.0.1", 26380), ("sentinel-b", 26379)),
                              username="app", password="p@ss", db=3, sentinel_password="sp")
    assert "p@ss" not in repr(url) and "sp" not in repr(url).replace("sentinels", "")


def test_the_least_there_is() -> None:
    url = parse_sentinel_url("redis+sentinel://s1/mymaster")
    assert (url.master_name, url.sentinels, url.username, url.password, url.db) == (
        "mymaster", (("s1", 26379),), None, None, 0)
    assert is_sentinel_url(" REDIS+SENTINEL://s1/m") and not is_sentinel_url("redis://s1:6379")


@pytest.mark.parametrize(("url", "message"), [
    ("redis+sentinel://:hunter2@s1:26379", "the master's name is missing"),
    ("redis+sentinel://:hunter2@/m", "needs at least one sentinel"),
    ("redis+sentinel://:hunter2@s1:x/m", "'s1:x' is not HOST[:PORT]"),
    ("redis+sentinel://:hunter2@s1/m/zero", "the database must be a number, not 'zero'"),
    ("redis+sentinel://:hunter2@s1/m?ssl_ca_certs=/ca.pem", "unknown parameter ssl_ca_certs"),
    ("rediss+sentinel://:hunter2@s1/m", "expected redis+sentinel://"),
])
def test_a_wrong_url_is_refused_without_its_password(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        parse_sentinel_url(url)
    assert "hunter2" not in str(caught.value) and ":***@" in str(caught.value)


def test_a_sentinel_password_may_hold_an_at_sign_and_never_shows() -> None:
    url = parse_sentinel_url("redis+sentinel://:pw@s1/m?sentinel_password=se@cret")
    assert (url.password, url.sentinel_password, url.sentinels) == ("pw", "se@cret", (("s1", 26379),))
    with pytest.raises(ValueError) as caught:
        parse_sentinel_url("redis+sentinel://s1:x/m?sentinel_password=topsecret")
    assert "topsecret" not in str(caught.value) and "sentinel_password=***" in str(caught.value)
