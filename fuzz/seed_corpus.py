"""Writes the curated seed corpus of the fuzz targets (fuzz/corpus/<target>/).

Run from the repository root: python fuzz/seed_corpus.py. The files are committed; libFuzzer
runs (make fuzz) write what they discover to fuzz/target/corpus/, not here. Each target
reads its bytes as fuzz/src/lib.rs describes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent / "corpus"
SECRET = b"fuzzing-signing-key-0123456789"  # fuzz/src/lib.rs SECRET
CHANNEL = b"rg:events"  # the default channel of key_prefix "rg"


def canonical_decode() -> dict[str, bytes]:
    return {
        "request": b'{"header_values":{"x-tenant":["a","b\xc3\xa9"]},"headers":{"x-tenant":"a"},'
        b'"method":"GET","path":"/api/v1/x","query":{"a":["1","x y"]},"user":{"id":"u1",'
        b'"roles":["admin"]}}',
        "numbers": b"[0,-1,9223372036854775807,-9223372036854775808,18446744073709551615,"
        b"12345678901234567890123,-12345678901234567890123,1.0,-0.5,1e300,5e-324,1e-7]",
        "escapes": b'"a\\"b\\\\c\\n\\r\\t\\u0001\\u001f\xc3\xa9\xf0\x9f\x98\x80"',
        "empty": b'{"a":[],"b":{},"c":"","d":null,"e":true,"f":false}',
        "deep": b'{"a":' * 63 + b"1" + b"}" * 63,
        "too_deep": b"[" * 65 + b"]" * 65,
        "unicode_escape": b'"\\u00e9\\u2028\\ud83d"',
        "big_exponent": b"[1e400,-1e400,1e-400]",
        "not_canonical": b'{"b":1,"a":2,"a":3}',
        "truncated": b'{"a":[1,2,{"b":"c',
    }


def canonical_round_trip() -> dict[str, bytes]:
    # Kind bytes (fuzz/src/lib.rs `value`): 0 null, 1 bool, 2 i64, 3 u64, 4 f64, 5 string,
    # 6 big integer, 7 array, 8 object.
    f = struct.pack("<d", 0.1)
    return {
        "null": b"\x00",
        "object": b"\x08\x03\x01a\x02"
        + struct.pack("<q", -5)
        + b"\x01b\x04"
        + f
        + b'\x01c\x05\x03x"\\',
        "array": b"\x07\x04\x01\x01\x03"
        + b"\xff" * 8
        + b"\x06\x01"
        + bytes(range(10, 40))
        + b"\x00",
        "nested": b"\x07\x01\x08\x01\x02k\x00\x07\x01\x07\x01\x08\x01\x00\x05\x04\xc3\xa9\x01\x7f",
        "float_edges": b"\x07\x03\x04"
        + struct.pack("<d", 1.0)
        + b"\x04"
        + struct.pack("<d", -0.0)
        + b"\x04"
        + struct.pack("<d", 5e-324),
        "control_chars": b"\x05\x06\x00\x01\x1f\n\r\t",
    }


def request_document() -> dict[str, bytes]:
    # NUL-separated: filter, method, path, query, raw body, then header name/value pairs.
    def req(*parts: bytes) -> bytes:
        return b"\x00".join(parts)

    return {
        "simple": req(
            b"x-tenant,accept", b"GET", b"/api/v1/x", b"a=1&b=2", b"", b"x-tenant", b"acme"
        ),
        "repeated_headers": req(
            b"X-Tenant, accept ,x-absent",
            b"POST",
            b"/a//b/",
            b"",
            b'{"k":1}',
            b"x-tenant",
            b"a",
            b"accept",
            b"*/*",
            b"X-Tenant",
            b"upper",
            b"x-tenant",
            b"b\xe9",
        ),
        "query_encodings": req(
            b"", b"GET", b"/", b"a=1&a=x+y&c&d=%41%zz%2&&e=%C3%A9&f=%FF&=v&k=", b""
        ),
        "raw_non_ascii_query": req(b"", b"GET", b"/q", b"g=\xc3\xa9&h=%C3\xa9%41&i=%\xff", b""),
        "unicode_path": req(
            b"", b"DELETE", "/caf\u00e9/%2F/\u65e5\u672c".encode(), b"", b"\xff\xfe"
        ),
        "escapes_everywhere": req(
            b"x-a", b'GE"T', b'/p\\"\n', b'k"=v\\&%22=%5C', b"\x01\x02", b"x-a", b'"\\\x7f\x1f'
        ),
    }


def seal(
    key: bytes,
    revision: bytes,
    expires: int,
    space: int,
    key_epoch: int,
    tags: list[tuple[bytes, int]],
    payload: bytes,
    signed: bool,
) -> bytes:
    body = struct.pack("<QQQH", expires, space, key_epoch, len(tags))
    for t, e in tags:
        body += struct.pack("<H", len(t)) + t + struct.pack("<Q", e)
    body += bytes([len(revision)]) + revision + payload
    if not signed:
        return b"RG2\x00" + body
    mac = hmac.new(SECRET, b"regoguard/l2/v2\x00" + key + b"\x00" + body, hashlib.sha256)
    return b"RG2\x01" + mac.digest() + body


def l2_entry() -> dict[str, bytes]:
    key, rev = b"rg:d:00ff", b"rev-1"  # fuzz/src/lib.rs l2_entry

    # Structured seeds: flip position (8), mask, key, revision, stamp, tags, payload.
    def structured(
        flip: int, mask: int, k: bytes, r: bytes, tags: list[tuple[bytes, int]], payload: bytes
    ) -> bytes:
        out = struct.pack("<Q", flip) + bytes([mask, len(k)]) + k + bytes([len(r)]) + r
        out += struct.pack("<QQQ", 1_700_000_000_000, 3, 4) + bytes([len(tags)])
        for t, e in tags:
            out += bytes([len(t)]) + t + struct.pack("<Q", e)
        return out + payload

    return {
        "signed_entry": seal(
            key, rev, 1_700_000_000_000, 1, 2, [(b"t1", 3)], b'{"allow":true}', True
        ),
        "unsigned_entry": seal(key, rev, 5, 0, 0, [], b"true", False),
        "unsigned_two_tags": seal(key, rev, 9, 7, 8, [(b"a", 1), (b"\xc3\xa9", 2)], b"", False),
        "wrong_revision": seal(key, b"rev-2", 5, 0, 0, [], b"true", False),
        "v1_entry": b"RG1\x00" + bytes(30),
        "truncated": seal(key, rev, 5, 0, 0, [(b"tag", 1)], b"x", False)[:30],
        "many_tags_claimed": b"RG2\x00" + bytes(24) + b"\xff\xff",
        "structured_flip_mac": structured(5, 0x40, b"abc", b"r1", [(b"t", 1)], b'{"allow":false}'),
        "structured_flip_body": structured(60, 0x01, b"k", b"", [], b"payload"),
        "structured_tags": structured(
            1000, 0xFF, b"\xc3\xa9", b"rev", [(b"a", 1), (b"b", 2), (b"", 0)], b""
        ),
    }


def message(body: dict[str, object], signed: bool) -> bytes:
    text = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    if not signed:
        return b"- " + text
    tag = hmac.new(SECRET, b"regoguard/bus/v1\x00" + CHANNEL + b"\x00" + text, hashlib.sha256)
    return tag.hexdigest().encode() + b" " + text


def pubsub_message() -> dict[str, bytes]:
    base = {"v": 2, "from": "p-1", "scope": "a", "sender": "s.1", "seq": 1, "ts": 1_700_000_000_000}
    structured = struct.pack("<Q", 10) + b"\x20\x02me\x01a" + struct.pack("<Q", 1000)
    return {
        "signed_reload": message({**base, "kind": "reload"}, True),
        "signed_set_data": message(
            {**base, "kind": "set_data", "path": ["a", "b"], "value": "[1,2]"}, True
        ),
        "signed_invalidate_key": message(
            {**base, "kind": "invalidate_key", "key": "ab" * 32}, True
        ),
        "unsigned_tags": message(
            {**base, "kind": "invalidate_tags", "tags": ["t1", "t\u00e9"]}, False
        ),
        "unsigned_all": message({**base, "kind": "invalidate_all"}, False),
        "unsigned_v1": b'- {"v":1,"kind":"reload"}',
        "unsigned_bad_key": message({**base, "kind": "invalidate_key", "key": "+b" * 32}, False),
        "structured_reload": structured + b"\x00",
        "structured_set_data": structured + b"\x01\x02\x01a\x02bc\x05[1,2]",
        "structured_key": structured + b"\x04" + bytes(range(32)),
    }


def regressions() -> dict[str, dict[str, bytes]]:
    """Inputs that failed a property once (fuzz/regressions/<target>/), with the fix's place."""
    base = {"v": 2, "from": "p-1", "scope": "a", "sender": "s.1", "seq": 1, "ts": 1_700_000_000_000}
    good = message({**base, "kind": "reload"}, True)
    tag, body = good.split(b" ", 1)
    return {
        # l2/pubsub.rs decode: a tag in another spelling verified (hex32).
        "pubsub_message": {
            "tag-upper-case": tag.upper() + b" " + body,
            "tag-plus-sign": b"+" + tag[1:] + b" " + body
            if tag[0:1] == b"0"
            else b"+0" + tag[2:] + b" " + body,
            "tag-trailing-digit": tag + b"0 " + body,
            "key-plus-sign": message({**base, "kind": "invalidate_key", "key": "+a" * 32}, True),
        },
        # request.rs form_decode: raw bytes above 0x7f were read as UTF-8, not latin-1.
        "request_document": {
            "raw-utf8-query": b"\x00GET\x00/\x00q=\xc3\xa9&r=%C3\xa9\x00",
        },
        # canonical.rs number: a long exponent is never canonical (and took minutes).
        "canonical_decode": {
            "huge-exponent": b"[1.5e99999999]",
            "huge-exponent-upper": b'{"a":1E+123456789}',
        },
    }


def main() -> None:
    for target, files in regressions().items():
        d = ROOT.parent / "regressions" / target
        d.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (d / name).write_bytes(data)
    for target, files in [
        ("canonical_decode", canonical_decode()),
        ("canonical_round_trip", canonical_round_trip()),
        ("request_document", request_document()),
        ("l2_entry", l2_entry()),
        ("pubsub_message", pubsub_message()),
    ]:
        d = ROOT / target
        d.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (d / name).write_bytes(data)


if __name__ == "__main__":
    main()
