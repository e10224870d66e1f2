"""Request signing: AWS SigV2 (Riak CS, `signature_version: "s3"`) and SigV4 (`"s3v4"`).

Both sign exactly the path and query that are sent, so callers build the target once and
hand it to both the signer and the wire.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from email.utils import formatdate

UNSIGNED = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

# Query parameters that are part of the SigV2 canonical resource (sub-resources).
SIGV2_SUBRESOURCES = frozenset(
    {"acl", "delete", "location", "partNumber", "tagging", "uploadId", "uploads", "versionId"}
)


class SigV2Signer:
    def __init__(self, access_key: str, secret_key: str) -> None:
        self._access_key = access_key
        self._mac = hmac.new(secret_key.encode(), digestmod=hashlib.sha1)
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
        """Add Date and Authorization to `headers`; `path` is the URL-encoded resource."""
        del payload_sha256  # SigV2 does not cover the payload; Content-MD5 does
        headers["Date"] = self._http_date()
        amz = sorted(
            (k.lower(), v.strip()) for k, v in headers.items() if k.lower().startswith("x-amz-")
        )
        sub = sorted((k, v) for k, v in query if k in SIGV2_SUBRESOURCES)
        resource = path
        if sub:
            resource += "?" + "&".join(f"{k}={v}" if v else k for k, v in sub)
        lines = [
            method,
            _get(headers, "content-md5"),
            _get(headers, "content-type"),
            headers["Date"],
        ]
        lines += [f"{k}:{v}" for k, v in amz]
        lines.append(resource)
        mac = self._mac.copy()
        mac.update("\n".join(lines).encode("utf-8"))
        signature = base64.b64encode(mac.digest()).decode()
        headers["Authorization"] = f"AWS {self._access_key}:{signature}"


class SigV4Signer:
    def __init__(self, access_key: str, secret_key: str, region: str) -> None:
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
        signed = sorted(
            (k.lower(), " ".join(v.split()))
            for k, v in headers.items()
            if k.lower() in ("host", "content-md5", "content-type")
            or k.lower().startswith("x-amz-")
        )
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
        scope = f"{day}/{self._region}/s3/aws4_request"
        to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256",
                stamp,
                scope,
                hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
            ]
        )
        signature = hmac.new(self._key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self._access_key}/{scope}, "
            f"SignedHeaders={signed_names}, Signature={signature}"
        )


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def _get(headers: dict[str, str], name: str) -> str:
    for k, v in headers.items():
        if k.lower() == name:
            return v
    return ""
