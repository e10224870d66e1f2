"""Request signing: AWS SigV2 (Riak CS, `signature_version: "s3"`) and SigV4 (`"s3v4"`).

Both sign exactly the path and query that are sent, so callers build the target once and
hand it to both the signer and the wire.

Header values are bytes carried in a latin-1 `str` (one character per byte), which is how
they go on the wire and how a response head is read. S3 servers hash the raw header bytes
they receive, so the string to sign holds those bytes, not a re-encoding of them. Where a
server reads characters (SigV4 folds whitespace with Go's `strings.Fields`, which decodes
UTF-8) the value is read as UTF-8 for that step only, invalid bytes kept as they are.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from email.utils import formatdate
from urllib.parse import unquote

UNSIGNED = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

# Query parameters that are part of the SigV2 canonical resource (sub-resources).
SIGV2_SUBRESOURCES = frozenset(
    {"acl", "delete", "location", "partNumber", "tagging", "uploadId", "uploads", "versionId"}
)
# Signed besides x-amz-*: Host and Content-Type (S3 requires them), Content-MD5 (pins the body).
_V4_SIGNED = frozenset({"host", "content-md5", "content-type"})
# Whitespace as Go's unicode.IsSpace has it, which MinIO-derived servers (SeaweedFS) fold
# in SigV4 header values; botocore's str.split agrees but for the C0 controls FS..US.
_ASCII_SPACE = " \t\n\v\f\r"
_ASCII_RUNS = re.compile(f"([{_ASCII_SPACE}])[{_ASCII_SPACE}]+")
_SPACES = re.compile("[\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")


class SigV2Signer:
    def __init__(self, access_key: str, secret_key: str, *, riakcs: bool = False) -> None:
        self._access_key = access_key
        self._mac = hmac.new(secret_key.encode(), digestmod=hashlib.sha1)
        self._riakcs = riakcs
        self._date_sec = -1
        self._date = ""

    def __repr__(self) -> str:
        return "SigV2Signer()"

    def _http_date(self) -> str:
        now = int(time.time())
        if now != self._date_sec:
            self._date_sec, self._date = now, formatdate(now, usegmt=True)
        return self._date

    def sign(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        headers: dict[str, str],
        payload_sha256: str | None = None,
    ) -> None:
        """Add Date and Authorization to `headers`; `path` is the URL-encoded resource and
        `query` values are URI-encoded as sent."""
        del payload_sha256  # SigV2 does not cover the payload; Content-MD5 does
        headers["Date"] = self._http_date()
        mac = self._mac.copy()
        mac.update(self.string_to_sign(method, path, query, headers, riakcs=self._riakcs))
        signature = base64.b64encode(mac.digest()).decode()
        headers["Authorization"] = f"AWS {self._access_key}:{signature}"

    @staticmethod
    def string_to_sign(
        method: str,
        path: str,
        query: list[tuple[str, str]],
        headers: dict[str, str],
        *,
        riakcs: bool = False,
    ) -> bytes:
        """The bytes signed. `riakcs`: Riak CS reads each x-amz-* value's bytes as code
        points and signs their UTF-8 (riak_cs_wm_utils:extract_amazon_headers/1), as
        botocore does for a value it sends as latin-1; Go servers sign the bytes."""
        # Values lose only the SP/HTAB an HTTP parser drops around them: servers sign the
        # rest as received (str.strip would also eat the A0 byte that ends "à" in UTF-8).
        amz = []
        for k, v in headers.items():
            name = k.lower()
            if name.startswith("x-amz-"):
                amz.append((name, v.strip(" \t")))
        amz.sort()
        # Sub-resource values are signed decoded (the S3 RESTAuthentication rules, botocore,
        # Riak CS): an upload id "...==" is sent as "...%3D%3D" but signed as "...==".
        sub = sorted((k, unquote(v)) for k, v in query if k in SIGV2_SUBRESOURCES)
        resource = path
        if sub:
            resource += "?" + "&".join(f"{k}={v}" if v else k for k, v in sub)
        lines = [
            method,
            _chars(_get(headers, "content-md5").strip(" \t")),
            _chars(_get(headers, "content-type").strip(" \t")),
            headers["Date"],
        ]
        lines += [f"{k}:{v if riakcs else _chars(v)}" for k, v in amz]
        lines.append(resource)
        return "\n".join(lines).encode("utf-8", "surrogateescape")


class SigV4Signer:
    """SigV4. Servers disagree on Trimall for whitespace other than single spaces: Go ones
    (SeaweedFS, MinIO) and botocore fold every run of Unicode spaces into one space, Ceph
    RGW keeps the first character of each run of ASCII whitespace. `spaces_only` picks
    the latter; `ambiguous` tells whether a request's headers would be signed differently
    under the two rules."""

    def __init__(self, access_key: str, secret_key: str, region: str) -> None:
        self.spaces_only = False
        self._access_key = access_key
        self._secret = secret_key.encode()
        self._region = region
        self._day = ""
        self._key = b""
        self._sec = -1
        self._stamp = ""

    def __repr__(self) -> str:
        return f"SigV4Signer(region={self._region!r})"

    def _now(self) -> tuple[str, str]:
        now = int(time.time())
        if now != self._sec:
            self._sec = now
            self._stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        day = self._stamp[:8]
        if day != self._day:
            k = _hmac(b"AWS4" + self._secret, day)
            k = _hmac(k, self._region)
            k = _hmac(k, "s3")
            self._key, self._day = _hmac(k, "aws4_request"), day
        return self._stamp, day

    def sign(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        headers: dict[str, str],
        payload_sha256: str | None = None,
    ) -> None:
        """Add x-amz-date, x-amz-content-sha256 and Authorization to `headers`.

        `query` values must already be URI-encoded as sent.
        """
        stamp, day = self._now()
        headers["x-amz-date"] = stamp
        headers["x-amz-content-sha256"] = payload_sha256 or UNSIGNED
        canonical, signed_names = self.canonical_request(
            method, path, query, headers, spaces_only=self.spaces_only
        )
        scope = f"{day}/{self._region}/s3/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical).hexdigest()]
        )
        signature = hmac.new(self._key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self._access_key}/{scope}, "
            f"SignedHeaders={signed_names}, Signature={signature}"
        )

    @staticmethod
    def canonical_request(
        method: str,
        path: str,
        query: list[tuple[str, str]],
        headers: dict[str, str],
        *,
        spaces_only: bool = False,
    ) -> tuple[bytes, str]:
        """The canonical request as the bytes hashed, and the signed header names."""
        trim = _trimall_spaces if spaces_only else _trimall
        signed = []
        for k, v in headers.items():
            name = k.lower()
            if name in _V4_SIGNED or name.startswith("x-amz-"):
                signed.append((name, trim(v)))
        signed.sort()
        signed_names = ";".join(k for k, _ in signed)
        canonical = "\n".join(
            [
                method,
                path,
                "&".join(f"{k}={v}" for k, v in sorted(query)),
                "".join(f"{k}:{v}\n" for k, v in signed),
                signed_names,
                headers["x-amz-content-sha256"],
            ]
        )
        return canonical.encode("utf-8", "surrogateescape"), signed_names

    @staticmethod
    def ambiguous(headers: dict[str, str]) -> bool:
        """Whether the two Trimall rules sign these headers differently."""
        return any(
            _trimall(v) != _trimall_spaces(v)
            for k, v in headers.items()
            if k.lower() in _V4_SIGNED or k.lower().startswith("x-amz-")
        )


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def _get(headers: dict[str, str], name: str) -> str:
    for k, v in headers.items():
        if k.lower() == name:
            return v
    return ""


def _chars(value: str) -> str:
    """A header value (bytes in a latin-1 str) as the text its UTF-8 spells, bytes that are
    no UTF-8 kept as surrogate escapes: encoding the result with "surrogateescape" gives
    back the bytes sent, whatever they are."""
    if value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return value  # no byte string: the wire layer refuses it (http.HeaderError)


def _trimall(value: str) -> str:
    """SigV4's Trimall: no whitespace around the value, runs inside folded to one space."""
    if value.isascii() and value.isprintable() and "  " not in value:
        return value.strip(" ")  # the usual case: no whitespace but single spaces
    return _SPACES.sub(" ", _chars(value)).strip(" ")


def _trimall_spaces(value: str) -> str:
    """Trimall as Ceph RGW does it (boost::trim_all in rgw_auth_s3.cc): ASCII whitespace
    trimmed at both ends, each inner run of it kept as its first character, every other
    byte as sent."""
    return _ASCII_RUNS.sub(r"\1", _chars(value).strip(_ASCII_SPACE))
