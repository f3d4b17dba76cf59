"""Strict JWS parsing: each rule of extauthz/tokens.py, one test each, failing if the rule goes."""

from __future__ import annotations

import base64
import json

import pytest

from extauthz.tokens import b64url_decode, b64url_encode, parse_token
from pavilion.errors import MalformedToken
from tests.extauthz.issuer import Issuer, padded, replace_part, unsigned_token

ISSUER = Issuer()
CAP = 8192
DUP_SUB = b'{"sub":"a","sub":"admin"}'
DUP_ALG = b'{"alg":"RS256","alg":"none"}'
DUP_NESTED = b'{"ctx":{"role":"u","role":"admin"}}'


def seg(value: object) -> str:
    return b64url_encode(json.dumps(value).encode())


def reason_of(token: str, cap: int = CAP) -> str:
    with pytest.raises(MalformedToken) as info:
        parse_token(token, cap)
    return info.value.reason


def test_good_token_parses_into_its_parts() -> None:
    token = ISSUER.token()
    parsed = parse_token(token, CAP)
    assert parsed.header["alg"] == "RS256"
    assert parsed.kid == ISSUER.kid("RS256")
    assert parsed.claims["sub"] == "user-1"
    head, body, sig = token.split(".")
    assert parsed.signing_input == f"{head}.{body}".encode()
    assert parsed.signature == b64url_decode(sig.encode(), "signature")


def test_size_cap_is_checked_before_decoding() -> None:
    token = ISSUER.token()
    assert reason_of(token, cap=len(token) - 1) == "oversize"
    parse_token(token, len(token))
    # Garbage over the cap is "oversize", not "malformed": nothing was decoded.
    assert reason_of("!" * (CAP + 1)) == "oversize"


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c.d", "a..c", ".b.c", "a.b."])
def test_exactly_three_non_empty_parts(token: str) -> None:
    assert reason_of(token) == "malformed"


def test_non_ascii_refused() -> None:
    token = ISSUER.token()
    assert reason_of(token[:-1] + "é") == "malformed"


@pytest.mark.parametrize("part", [0, 1, 2])
def test_padding_refused_in_every_part(part: int) -> None:
    # Vary kid and sub until the segment under test needs padding.
    for extra in ("", "x", "xx", "xxx"):
        token = ISSUER.token(kid="k" + extra, sub="user" + extra)
        segment = token.split(".")[part]
        if len(segment) % 4:
            break
    assert padded(segment) != segment
    assert reason_of(replace_part(token, part, padded(segment))) == "malformed"


@pytest.mark.parametrize("bad", ["+", "/", " ", "*"])
def test_non_base64url_characters_refused(bad: str) -> None:
    token = ISSUER.token()
    body = token.split(".")[1]
    assert reason_of(replace_part(token, 1, body[:4] + bad + body[5:])) == "malformed"


def test_non_canonical_trailing_bits_refused() -> None:
    # Two spellings of one byte string differ only in unused low bits of the last character.
    raw = b'{"alg":"RS256" }'  # 16 bytes -> 22 chars: 4 unused bits in the last character
    canonical = b64url_encode(raw)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(canonical[-1])
    tweaked = canonical[:-1] + alphabet[last | 1]
    assert tweaked != canonical
    with pytest.raises(MalformedToken):
        b64url_decode(tweaked.encode(), "x")
    assert b64url_decode(canonical.encode(), "x") == raw
    token = f"{tweaked}.{seg({'sub': 'x'})}.c2ln"
    assert reason_of(token) == "malformed"


def test_impossible_base64_length_refused() -> None:
    with pytest.raises(MalformedToken, match="impossible base64url length"):
        b64url_decode(b"abcde", "x")


@pytest.mark.parametrize("segment", [b"ab+d", b"ab/d", b"abc=", b"ab d", b"ab\nd"])
def test_only_the_base64url_alphabet_without_padding(segment: bytes) -> None:
    # The alphabet check names the problem; the canonical re-encoding alone would call it "not canonical".
    with pytest.raises(MalformedToken, match="not unpadded base64url"):
        b64url_decode(segment, "x")


@pytest.mark.parametrize("header", [b"not json", b"[1,2]", b'"alg"', b"\xff\xfe", b'{"alg":"RS256",}'])
def test_header_must_be_a_json_object(header: bytes) -> None:
    token = f"{b64url_encode(header)}.{seg({'sub': 'x'})}.c2ln"
    assert reason_of(token) == "malformed"


@pytest.mark.parametrize("payload", [b"not json", b"[]", b"42", b"null", b'{"exp": NaN}', b'{"exp": Infinity}',
                                     b'{"a":' * 5000 + b"1" + b"}" * 5000])
def test_payload_must_be_a_json_object(payload: bytes) -> None:
    token = f"{seg({'alg': 'RS256'})}.{b64url_encode(payload)}.c2ln"
    assert reason_of(token, cap=1 << 20) == "malformed"


def test_utf16_json_is_not_utf8() -> None:
    token = f"{b64url_encode(json.dumps({'alg': 'RS256'}).encode('utf-16'))}.{seg({})}.c2ln"
    assert reason_of(token) == "malformed"


def test_duplicate_claim_refused() -> None:
    token = f"{seg({'alg': 'RS256'})}.{b64url_encode(DUP_SUB)}.c2ln"
    assert reason_of(token) == "duplicate_member"


def test_duplicate_header_member_refused() -> None:
    token = f"{b64url_encode(DUP_ALG)}.{seg({})}.c2ln"
    assert reason_of(token) == "duplicate_member"


def test_duplicate_in_nested_object_refused() -> None:
    token = f"{seg({'alg': 'RS256'})}.{b64url_encode(DUP_NESTED)}.c2ln"
    assert reason_of(token) == "duplicate_member"


@pytest.mark.parametrize("name", ["jku", "x5u", "jwk", "x5c"])
def test_key_pointer_headers_refused(name: str) -> None:
    token = unsigned_token({"alg": "RS256", name: "https://evil.test/k"}, {}, "c2ln")
    with pytest.raises(MalformedToken, match=f"parameter {name} is refused") as info:
        parse_token(token, CAP)
    assert info.value.reason == "forbidden_header"


def test_unknown_header_parameter_refused() -> None:
    assert reason_of(unsigned_token({"alg": "RS256", "zip": "DEF"}, {}, "c2ln")) == "forbidden_header"


@pytest.mark.parametrize("crit", [["exp"], ["b64"], [], "b64"])
def test_crit_refused(crit: object) -> None:
    assert reason_of(unsigned_token({"alg": "RS256", "crit": crit, "b64": False}
                                    if crit == ["b64"] else {"alg": "RS256", "crit": crit}, {}, "c2ln")) \
        == "forbidden_header"


def test_thumbprint_headers_are_inert_and_accepted() -> None:
    parse_token(unsigned_token({"alg": "RS256", "x5t": "abc", "x5t#S256": "def", "typ": "JWT"}, {}, "c2ln"), CAP)


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_refused(alg: str) -> None:
    assert reason_of(unsigned_token({"alg": alg}, {}, "c2ln")) == "alg_not_allowed"


@pytest.mark.parametrize("header", [{}, {"alg": 1}, {"alg": ""}, {"alg": None}])
def test_alg_required_as_string(header: dict[str, object]) -> None:
    assert reason_of(unsigned_token(header, {}, "c2ln")) == "malformed"


@pytest.mark.parametrize("kid", [1, "", None, "k" * 257, ["a"]])
def test_kid_must_be_a_short_string(kid: object) -> None:
    assert reason_of(unsigned_token({"alg": "RS256", "kid": kid}, {}, "c2ln")) == "malformed"


@pytest.mark.parametrize("header", [{"alg": "RS256", "typ": 1}, {"alg": "RS256", "cty": ["x"]}])
def test_typ_and_cty_must_be_strings(header: dict[str, object]) -> None:
    assert reason_of(unsigned_token(header, {}, "c2ln")) == "malformed"


def test_nested_jwt_refused() -> None:
    assert reason_of(unsigned_token({"alg": "RS256", "cty": "JWT"}, {}, "c2ln")) == "malformed"


def test_non_string_token_refused() -> None:
    with pytest.raises(MalformedToken):
        parse_token(b"a.b.c", CAP)  # type: ignore[arg-type]


def test_error_description_never_quotes_the_token() -> None:
    token = unsigned_token({"alg": "RS256", "jku": "https://evil.test/secret-path"}, {"sub": "secret-subject"}, "c2ln")
    with pytest.raises(MalformedToken) as info:
        parse_token(token, CAP)
    assert "evil" not in info.value.description and "secret" not in info.value.description


@pytest.mark.parametrize("prefix", [b"", b"QUJD"])
def test_canonical_means_what_re_encoding_gives_back(prefix: bytes) -> None:
    # Every 2- and 3-character tail: accepted exactly when decoding and re-encoding returns it unchanged.
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    tails = [bytes([a, b]) for a in alphabet for b in alphabet]
    tails += [bytes([a, b, c]) for a in alphabet[:8] for b in alphabet[::7] for c in alphabet]
    for tail in tails:
        segment = prefix + tail
        raw = base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
        canonical = base64.urlsafe_b64encode(raw).rstrip(b"=") == segment
        try:
            assert b64url_decode(segment, "x") == raw and canonical, segment
        except MalformedToken:
            assert not canonical, segment
