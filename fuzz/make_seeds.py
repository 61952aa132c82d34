#!/usr/bin/env python3
"""Writes the seed corpus in fuzz/corpus/ (all but `operation`, whose seeds
need the fuzz corpus's signing and envelope keys: `cargo run -p
writeback-envelope --example fuzz_seeds -- fuzz/corpus/operation`).

Each seed is a small, meaningful input of its target's format, built here
from the format's specification so a reader can see what it holds:

    python3 fuzz/make_seeds.py      # rewrites fuzz/corpus/<target>/<name>
"""
import base64
import json
import os
import struct
import subprocess
import tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# --- SIDs and security descriptors (MS-DTYP 2.4.2, 2.4.4, 2.4.6) ----------
def sid(text):
    parts = text.split("-")
    rev, auth, subs = int(parts[1]), int(parts[2]), [int(p) for p in parts[3:]]
    return bytes([rev, len(subs)]) + auth.to_bytes(6, "big") + b"".join(
        struct.pack("<I", s) for s in subs
    )


def ace(ace_type, flags, body):
    return struct.pack("<BBH", ace_type, flags, 4 + len(body)) + body


def basic(ace_type, flags, mask, trustee, trailing=b""):
    return ace(ace_type, flags, struct.pack("<I", mask) + sid(trustee) + trailing)


def guid_le(text):
    import uuid

    return uuid.UUID(text).bytes_le


def obj(ace_type, flags, mask, trustee, object_type=None, inherited=None):
    present = (1 if object_type else 0) | (2 if inherited else 0)
    body = struct.pack("<II", mask, present)
    for g in (object_type, inherited):
        if g:
            body += guid_le(g)
    return ace(ace_type, flags, body + sid(trustee))


def acl(revision, aces):
    body = b"".join(aces)
    return struct.pack("<BBHHH", revision, 0, 8 + len(body), len(aces), 0) + body


def descriptor(control, owner=None, group=None, sacl=None, dacl=None):
    out = bytearray(20)
    parts = []
    at = 20
    slots = {}
    for slot, blob in ((12, sacl), (16, dacl), (4, owner), (8, group)):
        if blob is not None:
            slots[slot] = at
            parts.append(blob)
            at += len(blob)
    out[0] = 1
    struct.pack_into("<H", out, 2, control | 0x8000)
    for slot, off in slots.items():
        struct.pack_into("<I", out, slot, off)
    return bytes(out) + b"".join(parts)


DOMAIN = "S-1-5-21-1004336348-1177238915-682003330"
RESET_PASSWORD = "00299570-246d-11d0-a768-00aa006e0529"
USER_CLASS = "bf967aba-0de6-11d0-a285-00aa003049e2"
PWD_LAST_SET = "bf967a0a-0de6-11d0-a285-00aa003049e2"
dacl = acl(
    4,
    [
        basic(1, 0, 0x000F01FF, DOMAIN + "-1105"),  # explicit deny
        obj(5, 0x02, 0x100, DOMAIN + "-1104", RESET_PASSWORD, USER_CLASS),
        obj(5, 0x02, 0x30, DOMAIN + "-1104", PWD_LAST_SET, USER_CLASS),
        basic(0, 0x12, 0x00020094, "S-1-5-11"),  # inherited read
        obj(5, 0x1A, 0x100, DOMAIN + "-512", RESET_PASSWORD),
    ],
)
put("sd", "dacl-only", descriptor(0x0004, dacl=dacl))
put(
    "sd",
    "owner-group-sacl-dacl",
    descriptor(
        0x0014,
        owner=sid(DOMAIN + "-512"),
        group=sid(DOMAIN + "-513"),
        sacl=acl(2, [basic(2, 0xC0, 0x000D0127, "S-1-1-0")]),
        dacl=acl(2, [basic(0, 0, 0x000F01FF, "S-1-5-18", b"\0\0\0\0")]),
    ),
)
put(
    "sd",
    "protected-with-opaque-ace",
    descriptor(0x1004, dacl=acl(4, [ace(0x11, 0, b"\x01\x00\x00\x00" + sid("S-1-16-8192")),
                                   obj(6, 0, 0x100, "S-1-1-0", RESET_PASSWORD)])),
)
put("sd", "absolute-not-self-relative", b"\x01\x00\x04\x00" + b"\0" * 16)
put("sd", "empty-dacl", descriptor(0x0004, dacl=acl(2, [])))


# --- BER / LDAP SearchResultEntry (RFC 4511 4.5.2) ------------------------
def ber(tag, content):
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        b = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(b)]) + b
    return bytes([tag]) + length + content


def octets(b):
    return ber(0x04, b if isinstance(b, bytes) else b.encode())


def entry(dn, attrs):
    pal = b"".join(
        ber(0x30, octets(name) + ber(0x31, b"".join(octets(v) for v in values)))
        for name, values in attrs
    )
    return ber(0x64, octets(dn) + ber(0x30, pal))


def repl(entries, count=None):
    head = struct.pack("<IIII", 1, 0, len(entries) if count is None else count, 0)
    return head + b"".join(
        struct.pack("<II", attid, version) + b"\0" * 40 for attid, version in entries
    )


META = repl([(0x00000000, 1), (0x0009005A, 7), (0x00090060, 3)])
USER_DN = "CN=alice,OU=staff,DC=contoso,DC=test"
put(
    "ldap_entry",
    "user",
    entry(
        USER_DN,
        [
            ("objectSid", [sid(DOMAIN + "-1107")]),
            ("userAccountControl", ["512"]),
            ("adminCount", ["0"]),
            ("pwdLastSet", ["133765432100000000"]),
            ("lockoutTime", ["0"]),
            ("memberOf", ["CN=staff,DC=contoso,DC=test"]),
            ("replPropertyMetaData", [META]),
        ],
    ),
)
put(
    "ldap_entry",
    "token-groups",
    entry(USER_DN, [("tokenGroups", [sid(DOMAIN + "-513"), sid("S-1-5-32-545"), sid(DOMAIN + "-1104")])]),
)
put("ldap_entry", "with-descriptor", entry("DC=contoso,DC=test", [("nTSecurityDescriptor", [descriptor(0x0004, dacl=dacl)])]))
put("ldap_entry", "no-attributes", entry("CN=x,DC=contoso,DC=test", []))
put("ldap_entry", "long-length-form", entry("CN=" + "y" * 200 + ",DC=contoso,DC=test", [("cn", ["y" * 200])]))

put("repl_metadata", "unicode-pwd-v7", META)
put("repl_metadata", "count-past-the-end", repl([(0x0009005A, 2)], count=0xFFFFFFFF))
put("repl_metadata", "no-unicode-pwd", repl([(0x00000003, 1), (0x00020060, 9)]))
put("repl_metadata", "domain-sid", sid(DOMAIN))
put("repl_metadata", "truncated", META[:40])


# --- the agent's ledger.jsonl (crates/agent/src/ledger.rs) ---------------
T = 1_764_180_000_000
rec = lambda **kw: json.dumps(kw, separators=(",", ":"))
put(
    "ledger",
    "begun-done-forget",
    "\n".join(
        [
            rec(since_ms=T),
            rec(id="op-1", at_ms=T + 1, begun={"expires_ms": T + 60000, "target": "upn:alice@contoso.test", "kind": "reset", "witness": 7}),
            rec(id="op-1", at_ms=T + 2, done={"reason": "OK", "message": "the password was reset", "applied": True}),
            rec(id="op-2", at_ms=T + 3, begun={"expires_ms": T + 60000, "target": "guid:01020304-0506-0708-090a-0b0c0d0e0f10", "kind": "unlock"}),
            rec(id="op-3", at_ms=T + 4, begun={"expires_ms": T + 60000, "target": "upn:bob@contoso.test", "kind": "change", "witness": 2}),
            rec(id="op-3", at_ms=T + 5, forget=True),
        ]
    )
    + "\n",
)
put("ledger", "torn-last-line", rec(since_ms=T) + "\n" + rec(id="op-9", at_ms=T + 9, begun={"expires_ms": T})[:30])
put("ledger", "old-records-no-header", rec(id="old", at_ms=1000, done={"reason": "OK", "message": "", "applied": False}) + "\n")
put("ledger", "done-then-begun", rec(id="op-4", at_ms=T + 1, done={"reason": "PASSWORD_POLICY", "message": "too short", "applied": False}) + "\n" + rec(id="op-4", at_ms=T + 2, begun={"expires_ms": T}) + "\n")


# --- protobuf, by hand (field tags and lengths; proto/writeback/v1) ------
def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pb_bytes(field, b):
    b = b if isinstance(b, bytes) else b.encode()
    return varint(field << 3 | 2) + varint(len(b)) + b


def pb_int(field, n):
    return varint(field << 3) + varint(n)


def upn(u):
    return pb_bytes(1, u)


def guid(g):
    return pb_bytes(2, g)


put("cp_request", "reset", b"\x00" + pb_bytes(1, upn("Alice@Contoso.test ")) + pb_bytes(2, "N3w-Passw0rd!") + pb_bytes(3, "op-1") + pb_int(4, 1) + pb_int(5, 1))
put("cp_request", "change-guid", b"\x01" + pb_bytes(1, guid("01020304-0506-0708-090A-0B0C0D0E0F10")) + pb_bytes(2, "0ld") + pb_bytes(3, "n\u00e9w") + pb_int(5, 1) + pb_bytes(6, "contoso.test"))
put("cp_request", "unlock", b"\x02" + pb_bytes(1, upn("bob@contoso.test")) + pb_bytes(3, "Contoso.Test"))
put("cp_request", "add-domain", b"\x03" + pb_bytes(1, " Contoso.TEST") + pb_bytes(2, "contoso.com") + pb_bytes(2, "corp.contoso.com"))
with tempfile.TemporaryDirectory() as tmp:
    subprocess.run(
        ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", os.path.join(tmp, "k"), "-out", os.path.join(tmp, "csr"), "-subj", "/CN=agent"],
        check=True, capture_output=True,
    )
    csr = open(os.path.join(tmp, "csr")).read()
ENROLL = "wbe1." + "0123456789abcdef" + "." + "ab" * 32 + "." + "CD" * 32
put("cp_request", "enroll", b"\x04" + pb_bytes(1, ENROLL) + pb_bytes(2, csr) + pb_bytes(3, bytes(range(32))) + pb_bytes(4, "dc01"))
put(
    "cp_request",
    "issuer",
    b"\x05" + pb_bytes(1, "idp") + pb_bytes(2, "https://idp.contoso.test/api/oidc") + pb_bytes(3, "writeback")
    + pb_bytes(4, "RS256") + pb_bytes(5, "upn") + pb_bytes(6, "groups")
    + pb_bytes(7, pb_bytes(1, "helpdesk") + pb_int(2, 2)) + pb_int(8, 3) + pb_int(9, 120),
)
put("cp_request", "page-token", b"\x06" + "o:1764180000000:op-1".encode().hex().encode())
put("cp_request", "principal", b"\x06" + " Alice@Contoso.TEST ".encode())


def b64(obj_):
    raw = obj_ if isinstance(obj_, bytes) else json.dumps(obj_, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


claims = {"iss": "https://idp.test", "aud": "writeback", "exp": 4102444800, "upn": "alice@contoso.test", "azp": "portal", "amr": ["pwd", "otp"]}
put("token", "jwt-eddsa", "Bearer " + b64({"alg": "EdDSA", "kid": "k1"}) + "." + b64(claims) + "." + b64(bytes(64)))
put("token", "jwt-rs256", "bearer " + b64({"alg": "RS256", "typ": "JWT"}) + "." + b64(dict(claims, client_id="graph")) + "." + b64(bytes(256)))
put("token", "jwt-alg-none", "Bearer " + b64({"alg": "none"}) + "." + b64(claims) + ".")
put("token", "api-token", "Bearer wbt1." + "0f" * 32)
put("token", "enrollment-token", ENROLL)
put("token", "spiffe-agent", "spiffe://writeback/tenant/t1/domain/contoso.test/agent/a-1")
put("token", "spiffe-relay", "spiffe://writeback/tenant/t1/relay/r1")
