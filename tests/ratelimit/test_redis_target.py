"""`--redis` URLs: address, credentials, database and TLS, and the password never shown."""

from __future__ import annotations

import pytest

from ratelimit.redis_target import RedisTarget, parse_redis_url


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://10.0.0.5:6380", RedisTarget("10.0.0.5", 6380)),
    ("10.0.0.5", RedisTarget("10.0.0.5", 6379)),
    ("redis://:s3cr%40t@redis.internal/2", RedisTarget("redis.internal", password="s3cr@t", db=2)),
    ("redis://ratelimit:pw@redis.internal:6379?db=4", RedisTarget("redis.internal", username="ratelimit",
                                                                   password="pw", db=4)),
    ("rediss://:pw@cache.example.com:6380", RedisTarget("cache.example.com", 6380, password="pw", tls=True)),
    ("rediss://cache.example.com?ssl_ca_certs=/etc/ca.pem", RedisTarget("cache.example.com", tls=True,
                                                                         ca_file="/etc/ca.pem")),
    ("unix:///run/redis/redis.sock", RedisTarget(path="/run/redis/redis.sock")),
    ("unix://:pw@/run/redis.sock?db=1", RedisTarget(path="/run/redis.sock", password="pw", db=1)),
])
def test_url_forms(url: str, expected: RedisTarget) -> None:
    assert parse_redis_url(url) == expected


def test_the_handshake_authenticates_then_selects_the_database() -> None:
    assert parse_redis_url("redis://h").handshake() == []
    assert parse_redis_url("redis://:pw@h/3").handshake() == [("AUTH", "pw"), ("SELECT", 3)]
    assert parse_redis_url("redis://alice:pw@h").handshake() == [("AUTH", "alice", "pw")]


@pytest.mark.parametrize(("url", "message"), [
    ("http://:hunter2@127.0.0.1:6379", "expected redis://"),
    ("redis://:hunter2@", "expected redis://"),
    ("redis://:hunter2@h:notaport", "Port"),
    ("redis://:hunter2@h/zero", "the database must be a number"),
    ("redis://:hunter2@h?ssl_ca_certs=/ca.pem", "ssl_ca_certs needs rediss://"),
    ("redis://:hunter2@h?timeout=5", "unknown parameter timeout"),
    ("unix://:hunter2@host/path", "expected unix:///PATH"),
])
def test_a_bad_url_is_refused_naming_the_problem_and_never_the_password(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        parse_redis_url(url)
    assert "hunter2" not in str(refused.value) and ":***@" in str(refused.value)


def test_what_logs_show_has_no_password() -> None:
    target = parse_redis_url("rediss://alice:hunter2@cache.example.com:6380/2")
    assert target.address == "cache.example.com:6380"
    assert "hunter2" not in repr(target)


def test_cluster_seeds_alone_or_with_credentials_and_tls_for_every_node() -> None:
    from ratelimit.redis_target import parse_cluster_seeds

    assert parse_cluster_seeds("10.0.0.1:7000, 10.0.0.2:7001") == (RedisTarget(), [("10.0.0.1", 7000),
                                                                                  ("10.0.0.2", 7001)])
    template, seeds = parse_cluster_seeds("rediss://lim:pw@10.0.0.1:7000,10.0.0.2:7001?ssl_ca_certs=/ca.pem")
    assert seeds == [("10.0.0.1", 7000), ("10.0.0.2", 7001)]
    assert (template.username, template.password, template.tls, template.ca_file) == ("lim", "pw", True, "/ca.pem")
    for text, message in (("redis://:hunter2@10.0.0.1", "is not HOST:PORT"),
                          ("redis://:hunter2@", "needs at least one HOST:PORT"),
                          ("redis://:hunter2@10.0.0.1:7000/3", "database 0 only"),
                          ("http://:hunter2@10.0.0.1:7000", "--redis-cluster .*expected redis://")):
        with pytest.raises(ValueError, match=message) as refused:
            parse_cluster_seeds(text)
        assert "hunter2" not in str(refused.value)
