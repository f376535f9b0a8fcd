"""crypto.x509.* against the OPA Go engine, on both evaluators, cached and not.

Certificates, requests and keys are made here with ``cryptography``: a root CA, an
intermediate and leaves with the extensions policies read (SANs of every kind, key usages,
basic constraints). Chain verification cases are the attack tests: an expired or not yet valid
certificate, a foreign root, a leaf posing as a CA, a wrong key usage, a wrong host, a forged
signature; none may verify. Name constraints and certificate policies are compared with OPA
(Go 1.26) case by case and with Hypothesis over pools of near misses; so is every ECDSA curve
and digest pairing (P-521 included).
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
from collections.abc import Callable
from typing import Any

import pytest
import regoguard
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests import opa_oracle
from tests.test_builtins import EVALUATORS, ours, policy_of, same
from tests.test_builtins import opa_value as opa_value_of

UTC = datetime.UTC
NOW = datetime.datetime.now(UTC).replace(microsecond=0)
YEAR = datetime.timedelta(days=365)


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "DE")]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "unit"))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def make_cert(
    subject: str,
    key: Any,
    issuer: tuple[x509.Certificate, Any] | None = None,
    *,
    ca: bool = False,
    path_len: int | None = None,
    not_before: datetime.datetime = NOW - YEAR,
    not_after: datetime.datetime = NOW + YEAR,
    sans: list[x509.GeneralName] | None = None,
    eku: list[x509.ObjectIdentifier] | None = None,
    serial: int = 0x1234567890ABCDEF1234567890ABCDEF,
    org: str | None = "regoguard",
) -> x509.Certificate:
    issuer_name = issuer[0].subject if issuer else _name(subject, org)
    signer = issuer[1] if issuer else key
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject, org))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_len), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer:
        b = b.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()),
            critical=False,
        )
    b = b.add_extension(
        x509.KeyUsage(
            digital_signature=not ca,
            content_commitment=False,
            key_encipherment=not ca,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=ca,
            crl_sign=ca,
            encipher_only=False,
            decipher_only=False,
        ),
        critical=True,
    )
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    algorithm = None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return b.sign(signer, algorithm)


def pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


ROOT_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
INT_KEY = ec.generate_private_key(ec.SECP256R1())
LEAF_KEY = ec.generate_private_key(ec.SECP384R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)

ROOT = make_cert("Root CA", ROOT_KEY, ca=True, path_len=1, org="regoguard root")
INTER = make_cert("Intermediate", INT_KEY, (ROOT, ROOT_KEY), ca=True, path_len=0)
SANS: list[x509.GeneralName] = [
    x509.DNSName("api.example.com"),
    x509.DNSName("*.svc.example.com"),
    x509.RFC822Name("ops@example.com"),
    x509.IPAddress(ipaddress.ip_address("10.1.2.3")),
    x509.IPAddress(ipaddress.ip_address("fd00::1")),
    x509.UniformResourceIdentifier("spiffe://example.org/ns/prod/sa/api"),
]
SERVER = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
LEAF = make_cert("api.example.com", LEAF_KEY, (INTER, INT_KEY), sans=SANS, eku=SERVER)
LEAF_CLIENT_ONLY = make_cert(
    "client", LEAF_KEY, (INTER, INT_KEY), eku=[ExtendedKeyUsageOID.CLIENT_AUTH]
)
LEAF_NO_EKU = make_cert("no-eku", LEAF_KEY, (INTER, INT_KEY), sans=[x509.DNSName("x.example")])
LEAF_EXPIRED = make_cert(
    "expired", LEAF_KEY, (INTER, INT_KEY), not_before=NOW - 2 * YEAR, not_after=NOW - YEAR
)
LEAF_FUTURE = make_cert(
    "future", LEAF_KEY, (INTER, INT_KEY), not_before=NOW + YEAR, not_after=NOW + 2 * YEAR
)
# A leaf (not a CA) used as an intermediate: must not sign anything.
NOT_CA = make_cert("not a ca", INT_KEY, (ROOT, ROOT_KEY), ca=False)
UNDER_NOT_CA = make_cert("under not ca", LEAF_KEY, (NOT_CA, INT_KEY))
OTHER_ROOT = make_cert("Root CA", OTHER_KEY, ca=True, org="regoguard root")
ED_SELF = make_cert("ed25519", ED_KEY, serial=7, org=None)
DIRECT = make_cert("direct", LEAF_KEY, (ROOT, ROOT_KEY), sans=[x509.DNSName("direct.example")])
# Path length: the intermediate allows none below it.
INT2 = make_cert("Intermediate 2", LEAF_KEY, (INTER, INT_KEY), ca=True)
UNDER_INT2 = make_cert("too deep", ED_KEY, (INT2, LEAF_KEY))


def _rich() -> x509.Certificate:
    """A CA certificate with the extensions Go has fields for beyond the common ones."""
    b = (
        x509.CertificateBuilder()
        .subject_name(_name("rich", "regoguard"))
        .issuer_name(ROOT.subject)
        .public_key(OTHER_KEY.public_key())
        .serial_number(1)
        .not_valid_before(NOW - YEAR)
        .not_valid_after(NOW + YEAR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.CertificatePolicies(
                [x509.PolicyInformation(x509.ObjectIdentifier("2.23.140.1.2.1"), None)]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        x509.oid.AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier("http://ocsp.example.com"),
                    ),
                    x509.AccessDescription(
                        x509.oid.AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier("http://ca.example.com/ca.crt"),
                    ),
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        [x509.UniformResourceIdentifier("http://crl.example.com/ca.crl")],
                        None,
                        None,
                        None,
                    )
                ]
            ),
            critical=False,
        )
        .add_extension(x509.PolicyConstraints(0, None), critical=True)
        .add_extension(x509.InhibitAnyPolicy(1), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, x509.ObjectIdentifier("1.2.3.4")]
            ),
            critical=False,
        )
    )
    return b.sign(ROOT_KEY, hashes.SHA384())


RICH = _rich()


def _constrained() -> x509.Certificate:
    """An intermediate CA limited to example.com names and excluded from 10.0.0.0/8."""
    b = (
        x509.CertificateBuilder()
        .subject_name(_name("constrained", "regoguard"))
        .issuer_name(ROOT.subject)
        .public_key(INT_KEY.public_key())
        .serial_number(2)
        .not_valid_before(NOW - YEAR)
        .not_valid_after(NOW + YEAR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.NameConstraints(
                permitted_subtrees=[
                    x509.DNSName("example.com"),
                    x509.RFC822Name("example.com"),
                    x509.UniformResourceIdentifier(".example.com"),
                ],
                excluded_subtrees=[x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))],
            ),
            critical=True,
        )
    )
    return b.sign(ROOT_KEY, hashes.SHA256())


CONSTRAINED = _constrained()
INSIDE = make_cert(
    "inside", LEAF_KEY, (CONSTRAINED, INT_KEY), sans=[x509.DNSName("api.example.com")]
)
OUTSIDE = make_cert("outside", LEAF_KEY, (CONSTRAINED, INT_KEY), sans=[x509.DNSName("evil.com")])
UNDER_RICH = make_cert("under rich", LEAF_KEY, (RICH, OTHER_KEY))


def forged() -> str:
    """The leaf (PEM) with one byte of its signature changed."""
    der = bytearray(LEAF.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 1
    body = base64.encodebytes(bytes(der)).decode()
    return f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n"


def b64der(*certs: x509.Certificate) -> str:
    return base64.b64encode(
        b"".join(c.public_bytes(serialization.Encoding.DER) for c in certs)
    ).decode()


PARSE: list[tuple[str, Any]] = [
    ("root", pem(ROOT)),
    ("chain", pem(ROOT, INTER, LEAF)),
    ("ed25519", pem(ED_SELF)),
    ("policies, AIA, CRL distribution points", pem(RICH)),
    ("name constraints", pem(CONSTRAINED)),
    ("base64 DER", b64der(ROOT, LEAF)),
    ("base64 PEM", base64.b64encode(pem(LEAF).encode()).decode()),
    ("garbage", "not a certificate"),
    ("wrong PEM type", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
    ("empty", ""),
    ("not a string", 5),
]

# (name, certificates, options or None)
VERIFY: list[tuple[str, str, Any]] = [
    ("root, intermediate, leaf", pem(ROOT, INTER, LEAF), None),
    ("root, leaf", pem(ROOT, DIRECT), None),
    ("leaf without EKU", pem(ROOT, INTER, LEAF_NO_EKU), None),
    ("client-auth leaf (server auth by default)", pem(ROOT, INTER, LEAF_CLIENT_ONLY), None),
    ("expired leaf", pem(ROOT, INTER, LEAF_EXPIRED), None),
    ("not yet valid leaf", pem(ROOT, INTER, LEAF_FUTURE), None),
    ("foreign root with the same name", pem(OTHER_ROOT, INTER, LEAF), None),
    ("missing intermediate", pem(ROOT, LEAF), None),
    ("a non-CA as intermediate", pem(ROOT, NOT_CA, UNDER_NOT_CA), None),
    ("path length exceeded", pem(ROOT, INTER, INT2, UNDER_INT2), None),
    ("forged leaf signature", pem(ROOT, INTER) + forged(), None),
    ("one certificate", pem(ROOT), None),
    ("outside the name constraints", pem(ROOT, CONSTRAINED, OUTSIDE), None),
    ("garbage", "nope", None),
    ("with DNSName", pem(ROOT, INTER, LEAF), {"DNSName": "api.example.com"}),
    ("with wildcard DNSName", pem(ROOT, INTER, LEAF), {"DNSName": "a.svc.example.com"}),
    ("wildcard is one label", pem(ROOT, INTER, LEAF), {"DNSName": "a.b.svc.example.com"}),
    ("with a wrong DNSName", pem(ROOT, INTER, LEAF), {"DNSName": "evil.example.com"}),
    ("with an IP as DNSName", pem(ROOT, INTER, LEAF), {"DNSName": "10.1.2.3"}),
    (
        "client auth asked",
        pem(ROOT, INTER, LEAF_CLIENT_ONLY),
        {"KeyUsages": ["KeyUsageClientAuth"]},
    ),
    (
        "code signing asked",
        pem(ROOT, INTER, LEAF),
        {"KeyUsages": ["KeyUsageCodeSigning"]},
    ),
    ("any usage", pem(ROOT, INTER, LEAF_CLIENT_ONLY), {"KeyUsages": ["KeyUsageAny"]}),
    ("bad usage name", pem(ROOT, INTER, LEAF), {"KeyUsages": ["Nope"]}),
    (
        "CurrentTime in the past (before the leaf)",
        pem(ROOT, INTER, LEAF_FUTURE),
        {"CurrentTime": int((NOW + YEAR + YEAR / 2).timestamp()) * 10**9},
    ),
    (
        "CurrentTime after expiry",
        pem(ROOT, INTER, LEAF),
        {"CurrentTime": int((NOW + 2 * YEAR).timestamp()) * 10**9},
    ),
    ("unknown option", pem(ROOT, INTER, LEAF), {"Nope": 1}),
    ("DNSName not a string", pem(ROOT, INTER, LEAF), {"DNSName": 1}),
]


def _check(opa: Any, authorizer: Callable[..., regoguard.Authorizer], expr: str, inp: Any) -> Any:
    policy = policy_of(expr)
    expected = opa_value_of(opa, policy, "data.t.r.v", inp)
    for evaluator in EVALUATORS:
        for cache in (None, regoguard.CacheConfig()):
            authz = authorizer(policy, entrypoint="data.t.r", evaluator=evaluator, cache=cache)
            for _ in range(2):
                got = ours(authz, inp)
                assert same(got, expected), (
                    f"{evaluator} cache={cache is not None}: gave {got!r}, OPA {expected!r}"
                )
    return expected


@pytest.mark.parametrize(("inp"), [pytest.param(c, id=n) for n, c in PARSE])
def test_parse_certificates_matches_opa_field_for_field(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer], inp: Any
) -> None:
    _check(opa, authorizer, "crypto.x509.parse_certificates(input.c)", {"c": inp})


@pytest.mark.parametrize(("certs", "options"), [pytest.param(c, o, id=n) for n, c, o in VERIFY])
def test_parse_and_verify_matches_opa(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer], certs: str, options: Any
) -> None:
    if options is None:
        expr = "crypto.x509.parse_and_verify_certificates(input.c)"
    else:
        expr = "crypto.x509.parse_and_verify_certificates_with_options(input.c, input.o)"
    _check(opa, authorizer, expr, {"c": certs, "o": options})


@pytest.mark.parametrize("name", [n for n, _, o in VERIFY if o is None][3:])
def test_an_invalid_chain_never_grants(
    authorizer: Callable[..., regoguard.Authorizer], name: str
) -> None:
    certs = next(c for n, c, _ in VERIFY if n == name)
    policy = (
        "package t\n\ndefault allow := false\n\nallow if {\n"
        "\t[valid, chain] := crypto.x509.parse_and_verify_certificates(input.c)\n"
        "\tvalid\n\tcount(chain) > 0\n}\n"
    )
    for evaluator in EVALUATORS:
        authz = authorizer(policy, entrypoint="data.t.allow", evaluator=evaluator)
        assert authz.check({"c": certs}).result is False, f"{evaluator}: {name} granted"


# -- name constraints and certificate policies, as Go 1.26 checks a chain ---------------------

dns = x509.DNSName
email = x509.RFC822Name
uri = x509.UniformResourceIdentifier


def ip(a: str) -> x509.IPAddress:
    return x509.IPAddress(ipaddress.ip_address(a))


def net(a: str) -> x509.IPAddress:
    return x509.IPAddress(ipaddress.ip_network(a))


def ca_cert(
    cn: str,
    key: Any,
    issuer: tuple[x509.Certificate, Any] | None = (ROOT, ROOT_KEY),
    *,
    permitted: list[x509.GeneralName] | None = None,
    excluded: list[x509.GeneralName] | None = None,
    critical: bool = True,
    sans: list[x509.GeneralName] | None = None,
    extensions: list[tuple[x509.ExtensionType, bool]] = (),  # type: ignore[assignment]
    sign_hash: Any = None,
) -> x509.Certificate:
    """A CA (under `issuer`, or self-signed) with the given name constraints and extensions."""
    issuer_name = issuer[0].subject if issuer else _name(cn, "regoguard")
    signer = issuer[1] if issuer else key
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, "regoguard"))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(0x77)
        .not_valid_before(NOW - YEAR)
        .not_valid_after(NOW + YEAR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    if permitted is not None or excluded is not None:
        b = b.add_extension(x509.NameConstraints(permitted, excluded), critical=critical)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    for ext, crit in extensions:
        b = b.add_extension(ext, critical=crit)
    return b.sign(signer, sign_hash or hashes.SHA256())


def nc_chain(
    permitted: list[x509.GeneralName] | None,
    excluded: list[x509.GeneralName] | None,
    leaf_sans: list[x509.GeneralName] | None,
    **kw: Any,
) -> str:
    ca = ca_cert("nc", INT_KEY, permitted=permitted, excluded=excluded, **kw)
    leaf = make_cert("leaf", LEAF_KEY, (ca, INT_KEY), sans=leaf_sans, eku=SERVER)
    return pem(ROOT, ca, leaf)


DIR = x509.DirectoryName(_name("dir"))
NC_CASES: list[tuple[str, str]] = [
    ("dns inside", nc_chain([dns("example.com")], None, [dns("api.example.com")])),
    ("dns the domain itself", nc_chain([dns("example.com")], None, [dns("example.com")])),
    ("dns upper case", nc_chain([dns("example.com")], None, [dns("API.EXAMPLE.COM")])),
    ("dns label boundary", nc_chain([dns("example.com")], None, [dns("badexample.com")])),
    ("dns outside", nc_chain([dns("example.com")], None, [dns("evil.com")])),
    (
        "dns one outside",
        nc_chain([dns("example.com")], None, [dns("a.example.com"), dns("evil.com")]),
    ),
    ("dns dot: not the domain", nc_chain([dns(".example.com")], None, [dns("example.com")])),
    ("dns dot: a subdomain", nc_chain([dns(".example.com")], None, [dns("a.example.com")])),
    ("dns trailing dot", nc_chain([dns("example.com")], None, [dns("a.example.com.")])),
    ("dns excluded wildcard", nc_chain(None, [dns("evil.example.com")], [dns("*.example.com")])),
    ("dns excluded other", nc_chain(None, [dns("evil.example.com")], [dns("good.example.com")])),
    ("dns excluded subtree", nc_chain(None, [dns("example.com")], [dns("a.b.example.com")])),
    (
        "dns permitted and excluded",
        nc_chain([dns("example.com")], [dns("bad.example.com")], [dns("x.bad.example.com")]),
    ),
    (
        "dns pruned set",
        nc_chain(
            [dns("a.com"), dns("a.a.com"), dns("a-a.com")], None, [dns("a-a.com"), dns("x.a.com")]
        ),
    ),
    (
        "dns several permitted",
        nc_chain([dns("example.com"), dns("example.org")], None, [dns("a.example.org")]),
    ),
    ("ip unconstrained by dns", nc_chain([dns("example.com")], None, [ip("10.1.2.3")])),
    ("no SAN under constraints", nc_chain([dns("example.com")], None, None)),
    ("email inside", nc_chain([email("example.com")], None, [email("a@example.com")])),
    (
        "email subdomain, no dot",
        nc_chain([email("example.com")], None, [email("a@sub.example.com")]),
    ),
    ("email subdomain, dot", nc_chain([email(".example.com")], None, [email("a@sub.example.com")])),
    ("email the domain, dot", nc_chain([email(".example.com")], None, [email("a@example.com")])),
    ("email exact", nc_chain([email("Ops@Example.com")], None, [email("Ops@example.COM")])),
    (
        "email exact local case",
        nc_chain([email("Ops@Example.com")], None, [email("ops@example.com")]),
    ),
    ("email unparseable", nc_chain([email("example.com")], None, [email("not-an-email")])),
    ("email excluded", nc_chain(None, [email("example.com")], [email("a@example.com")])),
    ("ip inside", nc_chain([net("10.0.0.0/8")], None, [ip("10.1.2.3")])),
    ("ip outside", nc_chain([net("10.0.0.0/8")], None, [ip("192.168.1.1")])),
    ("ip v6 against v4", nc_chain([net("10.0.0.0/8")], None, [ip("fd00::1")])),
    ("ip v6 inside", nc_chain([net("fd00::/8")], None, [ip("fd00::1")])),
    ("ip excluded", nc_chain(None, [net("10.0.0.0/8")], [ip("10.1.2.3")])),
    ("ip excluded, a dns name", nc_chain(None, [net("10.0.0.0/8")], [dns("x.example")])),
    (
        "ip nested",
        nc_chain(
            [net("10.0.0.0/8"), net("10.1.0.0/16"), net("192.168.0.0/16")],
            None,
            [ip("192.168.3.4")],
        ),
    ),
    (
        "dns and ip",
        nc_chain(
            [dns("example.com"), net("10.0.0.0/8")], None, [dns("a.example.com"), ip("10.0.0.1")]
        ),
    ),
    (
        "dns and ip, ip outside",
        nc_chain(
            [dns("example.com"), net("10.0.0.0/8")], None, [dns("a.example.com"), ip("11.0.0.1")]
        ),
    ),
    ("uri dot inside", nc_chain([uri(".example.com")], None, [uri("spiffe://a.example.com/x")])),
    ("uri dot, the domain", nc_chain([uri(".example.com")], None, [uri("spiffe://example.com/x")])),
    (
        "uri subdomain, no dot",
        nc_chain([uri("example.com")], None, [uri("https://sub.example.com/")]),
    ),
    ("uri with port", nc_chain([uri("example.com")], None, [uri("https://example.com:8443/")])),
    ("uri with user", nc_chain([uri("example.com")], None, [uri("https://u@EXAMPLE.com/")])),
    ("uri without host", nc_chain([uri("example.com")], None, [uri("urn:example")])),
    ("uri with an IP", nc_chain([uri("example.com")], None, [uri("https://10.1.2.3/")])),
    ("uri excluded", nc_chain(None, [uri("example.com")], [uri("https://example.com/")])),
    (
        "not critical, still enforced",
        nc_chain([dns("example.com")], None, [dns("evil.com")], critical=False),
    ),
    ("directory name, critical", nc_chain([DIR], None, [dns("a.example.com")])),
    ("directory name, not critical", nc_chain([DIR], None, [dns("a.example.com")], critical=False)),
    (
        "directory name and dns",
        nc_chain([DIR, dns("example.com")], None, [dns("evil.com")], critical=False),
    ),
]

ROOT_NC_KEY = ec.generate_private_key(ec.SECP256R1())
ROOT_NC = ca_cert("root nc", ROOT_NC_KEY, None, permitted=[dns("example.com")])
INT_UNDER_NC = ca_cert(
    "int nc", INT_KEY, (ROOT_NC, ROOT_NC_KEY), permitted=[dns("sub.example.com")]
)
INT_BAD_SAN = ca_cert("int bad san", INT_KEY, (ROOT_NC, ROOT_NC_KEY), sans=[dns("evil.com")])
INT_PLAIN = ca_cert("int plain", INT_KEY, (ROOT_NC, ROOT_NC_KEY))
NC_CASES += [
    (
        "root constraint, leaf inside",
        pem(ROOT_NC, make_cert("l", LEAF_KEY, (ROOT_NC, ROOT_NC_KEY), sans=[dns("a.example.com")])),
    ),
    (
        "root constraint, leaf outside",
        pem(ROOT_NC, make_cert("l", LEAF_KEY, (ROOT_NC, ROOT_NC_KEY), sans=[dns("a.example.net")])),
    ),
    (
        "root constraint through a plain intermediate",
        pem(
            ROOT_NC,
            INT_PLAIN,
            make_cert("l", LEAF_KEY, (INT_PLAIN, INT_KEY), sans=[dns("evil.com")]),
        ),
    ),
    (
        "intermediate SAN outside the root's constraint",
        pem(
            ROOT_NC,
            INT_BAD_SAN,
            make_cert("l", LEAF_KEY, (INT_BAD_SAN, INT_KEY), sans=[dns("a.example.com")]),
        ),
    ),
    (
        "stacked constraints, outside the inner",
        pem(
            ROOT_NC,
            INT_UNDER_NC,
            make_cert("l", LEAF_KEY, (INT_UNDER_NC, INT_KEY), sans=[dns("a.example.com")]),
        ),
    ),
    (
        "stacked constraints, inside both",
        pem(
            ROOT_NC,
            INT_UNDER_NC,
            make_cert("l", LEAF_KEY, (INT_UNDER_NC, INT_KEY), sans=[dns("a.sub.example.com")]),
        ),
    ),
]

ANY_POLICY = x509.ObjectIdentifier("2.5.29.32.0")
P1 = x509.ObjectIdentifier("2.23.140.1.2.1")
P2 = x509.ObjectIdentifier("1.2.3.4.5")


def _policies(*oids: x509.ObjectIdentifier) -> tuple[x509.ExtensionType, bool]:
    return x509.CertificatePolicies([x509.PolicyInformation(o, None) for o in oids]), False


def _leaf_with(ca: x509.Certificate, key: Any, *oids: x509.ObjectIdentifier) -> x509.Certificate:
    """A leaf under `ca` carrying the given certificate policies."""
    b = (
        x509.CertificateBuilder()
        .subject_name(_name("policy leaf"))
        .issuer_name(ca.subject)
        .public_key(LEAF_KEY.public_key())
        .serial_number(0x99)
        .not_valid_before(NOW - YEAR)
        .not_valid_after(NOW + YEAR)
    )
    if oids:
        b = b.add_extension(_policies(*oids)[0], critical=False)
    return b.sign(key, hashes.SHA256())


# PolicyMappings (cryptography has no class for it): anyPolicy -> 1.2.3.4.5, DER by hand.
MAP_ANY = x509.UnrecognizedExtension(
    x509.ObjectIdentifier("2.5.29.33"),
    bytes.fromhex("300e300c0604551d200006042a030405"),
)
EXPLICIT_1 = ca_cert("explicit 1", OTHER_KEY, extensions=[(x509.PolicyConstraints(1, None), True)])
EXPLICIT_2 = ca_cert("explicit 2", OTHER_KEY, extensions=[(x509.PolicyConstraints(2, None), True)])
INHIBIT_ANY = ca_cert(
    "inhibit any",
    OTHER_KEY,
    extensions=[
        _policies(ANY_POLICY),
        (x509.InhibitAnyPolicy(0), True),
        (x509.PolicyConstraints(0, None), True),
    ],
)
MAPS_ANY = ca_cert("maps any", OTHER_KEY, extensions=[_policies(ANY_POLICY), (MAP_ANY, True)])
POLICY_CASES: list[tuple[str, str]] = [
    ("explicit policy, leaf without", pem(ROOT, RICH, UNDER_RICH)),
    ("explicit policy, leaf with it", pem(ROOT, RICH, _leaf_with(RICH, OTHER_KEY, P1))),
    ("explicit policy, leaf with another", pem(ROOT, RICH, _leaf_with(RICH, OTHER_KEY, P2))),
    (
        "explicit policy, leaf with anyPolicy",
        pem(ROOT, RICH, _leaf_with(RICH, OTHER_KEY, ANY_POLICY)),
    ),
    ("require explicit after 1, none", pem(ROOT, EXPLICIT_1, _leaf_with(EXPLICIT_1, OTHER_KEY))),
    (
        "require explicit after 1, leaf has one",
        pem(ROOT, EXPLICIT_1, _leaf_with(EXPLICIT_1, OTHER_KEY, P2)),
    ),
    ("require explicit after 2", pem(ROOT, EXPLICIT_2, _leaf_with(EXPLICIT_2, OTHER_KEY))),
    ("anyPolicy inhibited", pem(ROOT, INHIBIT_ANY, _leaf_with(INHIBIT_ANY, OTHER_KEY, P2))),
    (
        "anyPolicy inhibited, leaf anyPolicy",
        pem(ROOT, INHIBIT_ANY, _leaf_with(INHIBIT_ANY, OTHER_KEY, ANY_POLICY)),
    ),
    ("a mapping of anyPolicy", pem(ROOT, MAPS_ANY, _leaf_with(MAPS_ANY, OTHER_KEY, P2))),
    ("policies but no constraints", pem(ROOT, INTER, _leaf_with(INTER, INT_KEY, P2))),
]


@pytest.mark.parametrize(("certs"), [pytest.param(c, id=n) for n, c in NC_CASES + POLICY_CASES])
def test_name_constraints_and_policies_match_opa(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer], certs: str
) -> None:
    """OPA's answer on every evaluator; where OPA refuses the chain, a policy allowing on it
    denies."""
    expr = "crypto.x509.parse_and_verify_certificates(input.c)[0]"
    if _check(opa, authorizer, expr, {"c": certs}) is False:
        policy = (
            "package t\n\ndefault allow := false\n\nallow if {\n"
            "\t[valid, _] := crypto.x509.parse_and_verify_certificates(input.c)\n\tvalid\n}\n"
        )
        for evaluator in EVALUATORS:
            authz = authorizer(policy, entrypoint="data.t.allow", evaluator=evaluator)
            assert authz.check({"c": certs}).result is False, evaluator


@pytest.mark.parametrize(
    ("certs"),
    [
        pytest.param(pem(ROOT, CONSTRAINED, INSIDE), id="inside"),
        pytest.param(pem(ROOT, CONSTRAINED, OUTSIDE), id="outside"),
        pytest.param(pem(ROOT, RICH, _leaf_with(RICH, OTHER_KEY, P1)), id="policies"),
    ],
)
def test_constrained_chains_match_opa_field_for_field(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer], certs: str
) -> None:
    _check(opa, authorizer, "crypto.x509.parse_and_verify_certificates(input.c)", {"c": certs})
    _check(
        opa,
        authorizer,
        "crypto.x509.parse_and_verify_certificates_with_options(input.c, input.o)",
        {"c": certs, "o": {"KeyUsages": ["KeyUsageAny"]}},
    )


def test_certificates_that_all_sign_each_other_end_the_search(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer]
) -> None:
    """Forty CAs with one name and one key verify each other's signatures; with the root
    expired no path succeeds. The search is bounded (Go's 100 signature checks) instead of
    walking every path, and the answer is OPA's: not valid."""
    key = ec.generate_private_key(ec.SECP256R1())
    root = make_cert("loop", key, ca=True, org=None, not_after=NOW - YEAR / 2, serial=1)
    cas = [make_cert("loop", key, ca=True, org=None, serial=i + 2) for i in range(40)]
    leaf = make_cert("leaf", LEAF_KEY, (cas[0], key), serial=99)
    _check(
        opa,
        authorizer,
        "crypto.x509.parse_and_verify_certificates(input.c)",
        {"c": pem(root, *cas, leaf)},
    )


def test_a_verified_chain_is_cached_no_longer_than_its_first_not_after(
    authorizer: Callable[..., regoguard.Authorizer],
) -> None:
    """Caching rule 8: the decision read the clock through the chain's validity, so even with
    the policy's 60 s it is not served once the leaf has expired."""
    import time

    end = datetime.datetime.now(UTC).replace(microsecond=0) + datetime.timedelta(seconds=2)
    short = make_cert("short", LEAF_KEY, (ROOT, ROOT_KEY), not_after=end)
    policy = (
        'package t\n\nr := {"allow": v, "cache_ttl_seconds": 60} if {\n'
        "\t[v, _] := crypto.x509.parse_and_verify_certificates(input.c)\n}\n"
    )
    authz = authorizer(policy, entrypoint="data.t.r", cache=regoguard.CacheConfig())
    inp = {"c": pem(ROOT, short)}
    assert authz.check(inp).allow is True
    second = authz.check(inp)
    assert second.allow is True and second.source == "l1"
    while time.time() <= end.timestamp() + 1.05:  # Go: valid through the NotAfter second
        time.sleep(0.05)
    after = authz.check(inp)
    assert after.allow is False, "a decision made with the chain was served past its NotAfter"
    assert after.source == "engine"


CSR_KEY = ec.generate_private_key(ec.SECP256R1())
CSR = (
    x509.CertificateSigningRequestBuilder()
    .subject_name(_name("csr.example.com", "regoguard"))
    .add_extension(
        x509.SubjectAlternativeName(
            [
                x509.DNSName("csr.example.com"),
                x509.IPAddress(ipaddress.ip_address("192.0.2.1")),
                x509.RFC822Name("a@example.com"),
            ]
        ),
        critical=False,
    )
    .sign(CSR_KEY, hashes.SHA256())
)
CSR_PEM = CSR.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: Any, fmt: serialization.PrivateFormat) -> str:
    return str(
        key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()
    )


OTHER: list[tuple[str, Any]] = [
    ("crypto.x509.parse_certificate_request(input.a)", {"a": CSR_PEM}),
    (
        "crypto.x509.parse_certificate_request(input.a)",
        {"a": base64.b64encode(CSR.public_bytes(serialization.Encoding.DER)).decode()},
    ),
    ("crypto.x509.parse_certificate_request(input.a)", {"a": pem(ROOT)}),
    ("crypto.x509.parse_certificate_request(input.a)", {"a": "junk"}),
    (
        "crypto.x509.parse_rsa_private_key(input.a)",
        {"a": _key_pem(ROOT_KEY, serialization.PrivateFormat.TraditionalOpenSSL)},
    ),
    (
        "crypto.x509.parse_rsa_private_key(input.a)",
        {"a": _key_pem(ROOT_KEY, serialization.PrivateFormat.PKCS8)},
    ),
    (
        "crypto.x509.parse_rsa_private_key(input.a)",
        {
            "a": base64.b64encode(
                _key_pem(ROOT_KEY, serialization.PrivateFormat.TraditionalOpenSSL).encode()
            ).decode()
        },
    ),
    (
        "crypto.x509.parse_rsa_private_key(input.a)",
        {"a": _key_pem(CSR_KEY, serialization.PrivateFormat.PKCS8)},
    ),
    ("crypto.x509.parse_rsa_private_key(input.a)", {"a": "junk"}),
    ("crypto.x509.parse_rsa_private_key(input.a)", {"a": ""}),
    ("crypto.x509.parse_rsa_private_key(input.a)", {"a": pem(ROOT)}),
    (
        "crypto.x509.parse_rsa_private_key(input.a)",
        {"a": _key_pem(ED_KEY, serialization.PrivateFormat.PKCS8)},
    ),
    (
        "crypto.x509.parse_rsa_private_key(input.a)",
        {"a": _key_pem(LEAF_KEY, serialization.PrivateFormat.TraditionalOpenSSL)},
    ),
    (
        "crypto.parse_private_keys(input.a)",
        {
            "a": _key_pem(ROOT_KEY, serialization.PrivateFormat.TraditionalOpenSSL)
            + _key_pem(LEAF_KEY, serialization.PrivateFormat.TraditionalOpenSSL)
            + pem(ROOT)
            + _key_pem(CSR_KEY, serialization.PrivateFormat.PKCS8)
            + _key_pem(ED_KEY, serialization.PrivateFormat.PKCS8)
        },
    ),
    (
        "crypto.parse_private_keys(input.a)",
        {
            "a": base64.b64encode(
                _key_pem(ROOT_KEY, serialization.PrivateFormat.PKCS8).encode()
            ).decode()
        },
    ),
    ("crypto.parse_private_keys(input.a)", {"a": ""}),
    ("crypto.parse_private_keys(input.a)", {"a": "junk"}),
    ("crypto.parse_private_keys(input.a)", {"a": pem(ROOT)}),
    (
        "crypto.x509.parse_keypair(input.c, input.k)",
        {"c": pem(ROOT), "k": _key_pem(ROOT_KEY, serialization.PrivateFormat.TraditionalOpenSSL)},
    ),
    (
        "crypto.x509.parse_keypair(input.c, input.k)",
        {"c": pem(LEAF, INTER), "k": _key_pem(LEAF_KEY, serialization.PrivateFormat.PKCS8)},
    ),
    (
        "crypto.x509.parse_keypair(input.c, input.k)",
        {
            "c": base64.b64encode(pem(ED_SELF).encode()).decode(),
            "k": base64.b64encode(
                _key_pem(ED_KEY, serialization.PrivateFormat.PKCS8).encode()
            ).decode(),
        },
    ),
    (
        "crypto.x509.parse_keypair(input.c, input.k)",
        {"c": pem(ROOT), "k": _key_pem(OTHER_KEY, serialization.PrivateFormat.PKCS8)},
    ),
    (
        "crypto.x509.parse_keypair(input.c, input.k)",
        {"c": pem(ROOT), "k": _key_pem(LEAF_KEY, serialization.PrivateFormat.PKCS8)},
    ),
    ("crypto.x509.parse_keypair(input.c, input.k)", {"c": "junk", "k": "junk"}),
]


@pytest.mark.parametrize(
    ("expr", "inp"),
    [pytest.param(e, i, id=f"{e.split('(')[0]}#{k}") for k, (e, i) in enumerate(OTHER)],
)
def test_requests_and_keys_match_opa(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer], expr: str, inp: Any
) -> None:
    _check(opa, authorizer, expr, inp)


def test_oracle_marker() -> None:
    assert opa_oracle.UNDEFINED is opa_oracle.UNDEFINED


# -- P-521 -------------------------------------------------------------------------------------

P521_KEY = ec.generate_private_key(ec.SECP521R1())
P521_ROOT = make_cert("p521 root", P521_KEY, ca=True, org="p521")
P521_INT = ca_cert("p521 int", P521_KEY, (P521_ROOT, P521_KEY), sign_hash=hashes.SHA256())
P521_LEAF = make_cert("p521 leaf", LEAF_KEY, (P521_ROOT, P521_KEY), sans=[dns("a.example")])
P521_UNDER_INT = make_cert("p521 under int", P521_KEY, (P521_INT, P521_KEY), eku=SERVER)
P521_CASES: list[tuple[str, Any]] = [
    ("crypto.x509.parse_and_verify_certificates(input.c)", {"c": pem(P521_ROOT, P521_LEAF)}),
    (
        "crypto.x509.parse_and_verify_certificates(input.c)",
        {"c": pem(P521_ROOT, P521_INT, P521_UNDER_INT)},
    ),
    (
        "crypto.x509.parse_and_verify_certificates(input.c)[0]",
        {"c": pem(OTHER_ROOT, P521_LEAF)},
    ),
    ("crypto.x509.parse_certificates(input.c)", {"c": pem(P521_ROOT)}),
    (
        "crypto.parse_private_keys(input.a)",
        {"a": _key_pem(P521_KEY, serialization.PrivateFormat.TraditionalOpenSSL)},
    ),
    (
        "crypto.parse_private_keys(input.a)",
        {"a": _key_pem(P521_KEY, serialization.PrivateFormat.PKCS8)},
    ),
    (
        "crypto.x509.parse_keypair(input.c, input.k)",
        {"c": pem(P521_ROOT), "k": _key_pem(P521_KEY, serialization.PrivateFormat.PKCS8)},
    ),
]


@pytest.mark.parametrize(
    ("expr", "inp"),
    [pytest.param(e, i, id=f"{e.split('(')[0]}#{k}") for k, (e, i) in enumerate(P521_CASES)],
)
def test_p521_matches_opa(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer], expr: str, inp: Any
) -> None:
    _check(opa, authorizer, expr, inp)


# -- name constraints, random: constraints and names drawn from pools of near misses ------------

NC_POOL: list[x509.GeneralName] = [
    dns("example.com"),
    dns(".example.com"),
    dns("a.example.com"),
    dns("EXAMPLE.com"),
    dns("com"),
    dns("a-a.example.com"),
    email("example.com"),
    email(".example.com"),
    email("a@example.com"),
    email("A@Example.COM"),
    net("10.0.0.0/8"),
    net("10.1.0.0/16"),
    net("192.168.0.0/24"),
    net("fd00::/8"),
    net("0.0.0.0/0"),
    uri("example.com"),
    uri(".example.com"),
    uri("a.example.com"),
]
SAN_POOL: list[x509.GeneralName] = [
    dns("example.com"),
    dns("a.example.com"),
    dns("b.a.example.com"),
    dns("*.example.com"),
    dns("*.a.example.com"),
    dns("badexample.com"),
    dns("A.EXAMPLE.COM"),
    dns("x.a-a.example.com"),
    dns("other.org"),
    email("a@example.com"),
    email("A@example.com"),
    email("a@sub.example.com"),
    email("b@EXAMPLE.com"),
    email("a@other.org"),
    ip("10.1.2.3"),
    ip("10.2.0.1"),
    ip("192.168.0.5"),
    ip("192.168.1.5"),
    ip("fd00::1"),
    ip("::1"),
    uri("https://example.com/"),
    uri("https://a.example.com:8443/x"),
    uri("spiffe://b.a.example.com/"),
    uri("urn:x"),
    uri("https://10.0.0.1/"),
    uri("https://other.org"),
]


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    permitted=st.lists(st.sampled_from(NC_POOL), max_size=3, unique_by=repr),
    excluded=st.lists(st.sampled_from(NC_POOL), max_size=2, unique_by=repr),
    sans=st.lists(st.sampled_from(SAN_POOL), max_size=3, unique_by=repr),
    on_root=st.booleans(),
)
def test_hypothesis_name_constraints_agree_with_opa(
    opa: Any,
    authorizer: Callable[..., regoguard.Authorizer],
    permitted: list[x509.GeneralName],
    excluded: list[x509.GeneralName],
    sans: list[x509.GeneralName],
    on_root: bool,
) -> None:
    if not permitted and not excluded:
        return
    p, e = permitted or None, excluded or None
    if on_root:
        root = ca_cert("random root", ROOT_NC_KEY, None, permitted=p, excluded=e)
        leaf = make_cert("l", LEAF_KEY, (root, ROOT_NC_KEY), sans=sans or None, eku=SERVER)
        certs = pem(root, leaf)
    else:
        certs = nc_chain(p, e, sans or None)
    expr = "crypto.x509.parse_and_verify_certificates(input.c)[0]"
    policy = policy_of(expr)
    expected = opa_value_of(opa, policy, "data.t.r.v", {"c": certs})
    for evaluator in EVALUATORS:
        authz = authorizer(policy, entrypoint="data.t.r", evaluator=evaluator)
        assert same(ours(authz, {"c": certs}), expected), (permitted, excluded, sans, on_root)


def _raw_nc_ca(
    value_hex: str, critical: bool = True, sans: list[x509.GeneralName] | None = None
) -> str:
    """A chain through a CA whose name-constraints extension is the given DER (as is)."""
    ext = x509.UnrecognizedExtension(
        x509.oid.ExtensionOID.NAME_CONSTRAINTS, bytes.fromhex(value_hex)
    )
    ca = ca_cert("raw nc", INT_KEY, extensions=[(ext, critical)])
    sans = sans or [dns("a.example.com")]
    leaf = make_cert("l", LEAF_KEY, (ca, INT_KEY), sans=sans, eku=SERVER)
    return pem(ROOT, ca, leaf)


def _tlv(tag: int, *body: bytes) -> bytes:
    content = b"".join(body)
    assert len(content) < 128
    return bytes([tag, len(content)]) + content


def _nc(*permitted: bytes) -> str:
    """NameConstraints with the given GeneralNames (DER) as permitted subtrees."""
    subtrees = b"".join(_tlv(0x30, g) for g in permitted)
    return _tlv(0x30, _tlv(0xA0, subtrees)).hex()


V4_MAPPED = bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 0])
RAW_NC: list[tuple[str, str]] = [
    ("a valid dns subtree", _nc(_tlv(0x82, b"example.com"))),
    ("an empty extension", "3000"),
    ("empty permitted subtrees", "3002a000"),
    ("a dns constraint with a trailing dot", _nc(_tlv(0x82, b"example.com."))),
    ("a dns constraint with an empty label", _nc(_tlv(0x82, b"a..example.com"))),
    ("an IP mask with holes", _nc(_tlv(0x87, bytes([10, 0, 0, 0, 255, 0, 255, 0])))),
    ("an IP of the wrong length", _nc(_tlv(0x87, bytes([10, 0, 0, 0, 255, 0])))),
    ("an IPv4-mapped IPv6 constraint", _nc(_tlv(0x87, V4_MAPPED + b"\xff" * 16))),
    ("a URI constraint that is an IP", _nc(_tlv(0x86, b"10.0.0.1"))),
    ("a non-ASCII dns constraint", _nc(_tlv(0x82, "exé.com".encode()))),
    ("an unparseable email constraint", _nc(_tlv(0x81, b"a@@example.com"))),
    ("an email constraint", _nc(_tlv(0x81, b"a@example.com"))),
    ("a directory name (unhandled)", _nc(_tlv(0xA4, _tlv(0x30)))),
    ("trailing bytes", _nc(_tlv(0x82, b"example.com")) + "00"),
]


HOST_BITS = _nc(
    _tlv(0x87, bytes([10, 1, 2, 3, 255, 0, 0, 0])), _tlv(0x87, bytes([10, 0, 0, 0, 255, 255, 0, 0]))
)


@pytest.mark.parametrize("address", ["10.0.0.1", "10.0.9.9", "10.1.2.3", "10.200.0.1", "11.0.0.1"])
def test_ip_constraints_with_host_bits_match_opa(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer], address: str
) -> None:
    certs = _raw_nc_ca(HOST_BITS, sans=[ip(address)])
    _check(opa, authorizer, "crypto.x509.parse_and_verify_certificates(input.c)[0]", {"c": certs})


@pytest.mark.parametrize(("value"), [pytest.param(v, id=n) for n, v in RAW_NC])
def test_name_constraints_go_cannot_parse_match_opa(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer], value: str
) -> None:
    certs = _raw_nc_ca(value)
    _check(opa, authorizer, "crypto.x509.parse_and_verify_certificates(input.c)[0]", {"c": certs})
    _check(opa, authorizer, "count(crypto.x509.parse_certificates(input.c))", {"c": certs})


# -- certificate policies, random: RFC 5280 section 6.1 (with RFC 9618) as Go runs it ----------

POLICY_OIDS = [P1, P2, ANY_POLICY]
OID_DER = {P1: bytes.fromhex("6781" + "0c010201"), P2: bytes.fromhex("2a030405")}
OID_DER[ANY_POLICY] = bytes.fromhex("551d2000")


def _mappings(pairs: list[tuple[x509.ObjectIdentifier, x509.ObjectIdentifier]]) -> Any:
    body = b"".join(_tlv(0x30, _tlv(0x06, OID_DER[a]), _tlv(0x06, OID_DER[b])) for a, b in pairs)
    return x509.UnrecognizedExtension(x509.ObjectIdentifier("2.5.29.33"), _tlv(0x30, body))


CA_POLICY = st.fixed_dictionaries(
    {
        "policies": st.lists(st.sampled_from(POLICY_OIDS), max_size=2, unique=True),
        "explicit": st.sampled_from([None, 0, 1, 2]),
        "inhibit_mapping": st.sampled_from([None, 0, 1]),
        "inhibit_any": st.sampled_from([None, 0, 1]),
        "mappings": st.lists(
            st.tuples(st.sampled_from(POLICY_OIDS), st.sampled_from(POLICY_OIDS)),
            max_size=2,
            unique=True,
        ),
    }
)


def _policy_ca(i: int, spec: dict[str, Any], issuer: tuple[x509.Certificate, Any]) -> Any:
    exts: list[tuple[x509.ExtensionType, bool]] = []
    if spec["policies"]:
        exts.append(_policies(*spec["policies"]))
    if spec["explicit"] is not None or spec["inhibit_mapping"] is not None:
        exts.append((x509.PolicyConstraints(spec["explicit"], spec["inhibit_mapping"]), True))
    if spec["inhibit_any"] is not None:
        exts.append((x509.InhibitAnyPolicy(spec["inhibit_any"]), True))
    if spec["mappings"]:
        exts.append((_mappings(spec["mappings"]), True))
    return ca_cert(f"policy ca {i}", INT_KEY, issuer, extensions=exts)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cas=st.lists(CA_POLICY, min_size=1, max_size=2),
    leaf_policies=st.lists(st.sampled_from(POLICY_OIDS), max_size=2, unique=True),
)
def test_hypothesis_certificate_policies_agree_with_opa(
    opa: Any,
    authorizer: Callable[..., regoguard.Authorizer],
    cas: list[dict[str, Any]],
    leaf_policies: list[x509.ObjectIdentifier],
) -> None:
    chain = [ROOT]
    issuer: tuple[x509.Certificate, Any] = (ROOT, ROOT_KEY)
    for i, spec in enumerate(cas):
        ca = _policy_ca(i, spec, issuer)
        chain.append(ca)
        issuer = (ca, INT_KEY)
    chain.append(_leaf_with(issuer[0], issuer[1], *leaf_policies))
    certs = pem(*chain)
    policy = policy_of("crypto.x509.parse_and_verify_certificates(input.c)[0]")
    expected = opa_value_of(opa, policy, "data.t.r.v", {"c": certs})
    for evaluator in EVALUATORS:
        authz = authorizer(policy, entrypoint="data.t.r", evaluator=evaluator)
        assert same(ours(authz, {"c": certs}), expected), (cas, leaf_policies)
    event(f"valid={expected}")  # both answers are drawn (--hypothesis-show-statistics)


@pytest.mark.parametrize("curve", [ec.SECP256R1, ec.SECP384R1, ec.SECP521R1])
@pytest.mark.parametrize("digest", [hashes.SHA256, hashes.SHA384, hashes.SHA512])
@pytest.mark.parametrize("forge", [False, True])
def test_every_ecdsa_curve_and_digest_matches_opa(
    opa: Any,
    authorizer: Callable[..., regoguard.Authorizer],
    curve: Any,
    digest: Any,
    forge: bool,
) -> None:
    """Go accepts any of SHA-256/384/512 with any curve (ring pairs only some; RustCrypto
    checks the rest); a changed signature byte never verifies."""
    key = ec.generate_private_key(curve())
    root = ca_cert("ecdsa root", key, None, sign_hash=digest())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("ecdsa leaf"))
        .issuer_name(root.subject)
        .public_key(LEAF_KEY.public_key())
        .serial_number(5)
        .not_valid_before(NOW - YEAR)
        .not_valid_after(NOW + YEAR)
        .sign(key, digest())
    )
    der = bytearray(leaf.public_bytes(serialization.Encoding.DER))
    if forge:
        der[-3] ^= 1
    body = base64.encodebytes(bytes(der)).decode()
    certs = pem(root) + f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n"
    expected = _check(
        opa, authorizer, "crypto.x509.parse_and_verify_certificates(input.c)[0]", {"c": certs}
    )
    assert expected is (not forge)


@pytest.mark.parametrize(
    "sans",
    [
        pytest.param([x509.DirectoryName(_name("d"))], id="directory name only"),
        pytest.param([x509.DirectoryName(_name("d")), dns("a.example")], id="with a dns name"),
        pytest.param(
            [x509.OtherName(x509.ObjectIdentifier("1.2.3.4"), b"\x05\x00")], id="other name only"
        ),
    ],
)
def test_a_critical_san_without_known_names_matches_opa(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer], sans: list[x509.GeneralName]
) -> None:
    """Go leaves a critical SAN extension naming no DNS, email, IP or URI unhandled, so the
    certificate never verifies."""
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("san leaf"))
        .issuer_name(ROOT.subject)
        .public_key(LEAF_KEY.public_key())
        .serial_number(5)
        .not_valid_before(NOW - YEAR)
        .not_valid_after(NOW + YEAR)
        .add_extension(x509.SubjectAlternativeName(sans), critical=True)
        .sign(ROOT_KEY, hashes.SHA256())
    )
    certs = pem(ROOT, leaf)
    _check(opa, authorizer, "crypto.x509.parse_and_verify_certificates(input.c)[0]", {"c": certs})
    _check(opa, authorizer, "crypto.x509.parse_certificates(input.c)", {"c": certs})
