"""Riak CS's S3 dialect, for the fault proxy's `dialect="riakcs"` mode and the tests.

Each rule is read from Riak CS's own source (basho/riak_cs 2.1, `src/*.erl`, and the
mochiweb/xmerl functions it calls) and named after the file and function it comes from.
Nothing here is Riak CS's code; it is what that code does, as seen by a client:

- SigV2 only (`riak_cs_s3_auth`); SigV4 is refused while `auth_v4_enabled` is false, its
  default (`riak_cs_config:auth_v4_enabled/0`). The canonical resource is the path *as
  received* plus the sub-resources of the query *decoded* (`mochiweb_util:parse_qs`), so an
  `uploadId` ending in `==` is signed with `==`, not `%3D%3D`. A bad signature is
  `403 AccessDenied` (`riak_cs_wm_common:post_authentication/5`), not SignatureDoesNotMatch.
- Object keys are the path decoded by `mochiweb_util:unquote`, which turns `+` into a space
  (`riak_cs_s3_rewrite:rewrite_path/4` then `riak_cs_wm_utils:extract_key/2`).
- Listing is ListObjects V1 and nothing else: only `prefix`, `delimiter`, `marker` and
  `max-keys` are read (`riak_cs_wm_objects:get_options/1`), so `encoding-type=url`,
  `list-type=2` and `start-after` are ignored and keys come back raw, with no
  `<EncodingType>` (`riak_cs_xml:list_objects_response_to_simple_form/1`).
- Multipart upload ids are `base64url` of a 16-byte UUID: 24 characters ending in `==`
  (`riak_cs_wm_object_upload:process_post_helper/2`, `base64url:encode/1`, `druuid:v4/0`).
- A Content-MD5 that does not match the body, malformed or not, is `400 InvalidDigest`
  (`riak_cs_put_fsm:is_digest_valid/2`, `riak_cs_s3_response:invalid_digest_response/3`);
  Riak CS has no BadDigest.

The proxy holds the test credentials: it checks the client's signature the Riak CS way
and signs its own request to the real server (SeaweedFS) with SigV4, so rewriting upload
ids, paths and queries on the way never breaks a signature the server checks.

Not modelled (the engine does not need them): virtual-host addressing, anonymous access,
ACLs and policies, Riak CS's ListParts/ListMultipartUploads fields (upload ids are mapped,
the rest is the server's), copy sources, ranges beyond what the server does.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import email.utils
import hashlib
import hmac
import re
import secrets
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, unquote_plus

# include/riak_cs.hrl ?S3_XMLNS and ?XML_PROLOG (xmerl exports no newline after it).
S3_XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
XML_PROLOG = b'<?xml version="1.0" encoding="UTF-8"?>'
# include/s3_api.hrl ?SUBRESOURCES: the query keys in the SigV2 canonical resource, and
# those that make a bucket GET something other than a listing (riak_cs_s3_rewrite).
SUBRESOURCES = frozenset(
    {
        "acl",
        "location",
        "logging",
        "notification",
        "partNumber",
        "policy",
        "requestPayment",
        "torrent",
        "uploadId",
        "uploads",
        "versionId",
        "versioning",
        "versions",
        "website",
        "delete",
        "lifecycle",
    }
)
MAX_KEYS = 1000  # riak_cs.hrl ?DEFAULT_LIST_OBJECTS_MAX_KEYS, the default and the cap
MIN_PART_SIZE = 5 * 1024 * 1024  # riak_cs_mp_utils ?MIN_MP_PART_SIZE, all parts but the last
MAX_PART_NUMBER = 10000  # riak_cs.hrl ?DEFAULT_MAX_PART_NUMBER
MAX_CLOCK_SKEW = 900  # riak_cs_wm_utils:check_timeskew/1, seconds, strictly less is fine
UNSIGNED = "UNSIGNED-PAYLOAD"
# Status 477 for an unparseable CompleteMultipartUpload body, and no body with it
# (riak_cs_wm_object_upload_part:process_post/2 halts with it as is).
BAD_COMPLETE_BODY_STATUS = 477

# riak_cs_s3_response:error_message/1 and status_code/1, for the codes a client meets.
ERRORS: dict[str, tuple[int, str]] = {
    "AccessDenied": (403, "Access Denied"),
    "RequestTimeTooSkewed": (
        403,
        "The difference between the request time and the current time is too large.",
    ),
    "NoSuchBucket": (404, "The specified bucket does not exist."),
    "NoSuchKey": (404, "The specified key does not exist."),
    "NoSuchUpload": (
        404,
        "The specified upload does not exist. The upload ID may be invalid, "
        "or the upload may have been aborted or completed.",
    ),
    "InvalidDigest": (400, "The Content-MD5 you specified was invalid."),
    "InvalidArgument": (400, "Invalid Argument"),
    "InvalidPart": (400, "Please reduce your request rate."),  # no message of its own
    "InvalidPartOrder": (400, "Please reduce your request rate."),
    "EntityTooSmall": (
        400,
        "Your proposed upload is smaller than the minimum allowed object size. Each part "
        "must be at least 5 MB in size, except the last part.",
    ),
    "EntityTooLarge": (400, "Your proposed upload exceeds the maximum allowed object size."),
    "InvalidRange": (416, "The requested range is not satisfiable"),
    "InvalidRequest": (
        400,
        "The authorization mechanism you have provided (AWS4-HMAC-SHA256) is not supported.",
    ),
    "MalformedXML": (
        400,
        "The XML you provided was not well-formed or did not validate against our published schema",
    ),
    "ServiceUnavailable": (503, "Please reduce your request rate."),
}
# riak_cs_wm_object_upload_part:valid_part_number/1 answers with this message.
PART_NUMBER_MESSAGE = "Part number must be an integer between 1 and 10000, inclusive"
REASONS = {
    200: "OK",
    204: "No Content",
    206: "Partial Content",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    416: "Requested Range Not Satisfiable",
    477: "Unknown",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


# --- URL decoding as mochiweb_util does it -------------------------------------------------

_HEX = frozenset(b"0123456789abcdefABCDEF")


def mochi_unquote(raw: str) -> bytes:
    """mochiweb_util:unquote/1 (qs_revdecode): `%XX` decoded, `+` is a space, a `%` not
    followed by two hex digits stays as it is. `raw` is wire bytes in a latin-1 str."""
    data = raw.encode("latin-1")
    out = bytearray()
    i = 0
    while i < len(data):
        c = data[i]
        if c == 0x25 and i + 2 < len(data) and {data[i + 1], data[i + 2]} <= _HEX:
            out.append(int(data[i + 1 : i + 3], 16))
            i += 3
            continue
        out.append(0x20 if c == 0x2B else c)
        i += 1
    return bytes(out)


def mochi_parse_qs(raw_query: str) -> list[tuple[bytes, bytes]]:
    """mochiweb_util:parse_qs/1: pairs split on `&` or `;`, each side unquoted as above;
    a key without `=` has an empty value."""
    pairs: list[tuple[bytes, bytes]] = []
    for item in re.split("[&;]", raw_query):
        if not item:
            continue
        key, _, value = item.partition("=")
        pairs.append((mochi_unquote(key), mochi_unquote(value)))
    return pairs


def _text(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def _bytes(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def split_target(target: str) -> tuple[str, str]:
    """(raw path, raw query) of a request target, nothing decoded
    (mochiweb_util:urlsplit_path/1 does not expand escapes)."""
    path, _, query = target.partition("?")
    path = path.partition("#")[0]
    return path, query


def bucket_and_key(raw_path: str) -> tuple[bytes, bytes | None]:
    """Path-style bucket and object key as Riak CS reads them.

    riak_cs_s3_rewrite:rewrite_path/4 unquotes the bucket and re-quotes the rest with
    quote_plus; riak_cs_wm_utils:extract_key/2 then unquotes twice. The net effect is one
    mochi_unquote of the raw path: `%2B` is `+`, but a literal `+` is a space. A bucket
    path (`/b` or `/b/`) has no key.
    """
    rest = raw_path[1:] if raw_path.startswith("/") else raw_path
    bucket, slash, key = rest.partition("/")
    if not slash or not key:
        return mochi_unquote(bucket), None
    return mochi_unquote(bucket), mochi_unquote(key)


# --- SigV2 as riak_cs_s3_auth checks it ------------------------------------------------------


def _headers_lower(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Header names lower-cased, repeated headers joined (mochiweb_headers keeps one value
    per name, riak_cs_wm_utils:normalize_headers/1 lower-cases)."""
    out: dict[str, str] = {}
    for name, value in headers:
        low = name.lower()
        out[low] = f"{out[low]}, {value}" if low in out else value
    return out


def canonical_resource(raw_path: str, raw_query: str) -> bytes:
    """riak_cs_s3_auth:calculate_signature_v2/2 + canonicalize_qs/2 (v2): the raw path,
    then the sub-resources of the query, decoded, sorted, `k=v` or `k` for an empty value.
    Path style only (virtual hosts prepend `/bucket`, riak_cs_s3_rewrite:rcs_rewrite_header)."""
    subs = sorted((k, v) for k, v in mochi_parse_qs(raw_query) if _text(k) in SUBRESOURCES)
    resource = raw_path.encode("latin-1")
    if subs:
        resource += b"?" + b"&".join(k + b"=" + v if v else k for k, v in subs)
    return resource


def string_to_sign_v2(method: str, target: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """riak_cs_s3_auth:calculate_signature_v2/2, as the bytes HMAC-SHA1 is computed over.

    Header values are wire bytes in latin-1 strs. The date line is the query's `Expires`
    if any, else empty when an x-amz-date header is present, else the Date header. The
    x-amz-* lines are `name:value`, sorted, duplicates merged (ordsets), and each value
    passes through unicode:characters_to_binary/2 with its bytes taken as code points
    (riak_cs_wm_utils:extract_amazon_headers/1): a non-ASCII value is signed as the UTF-8
    of its latin-1 reading, i.e. encoded twice.
    """
    raw_path, raw_query = split_target(target)
    h = _headers_lower(headers)
    query = dict(mochi_parse_qs(raw_query))
    if b"Expires" in query:
        date = query[b"Expires"] + b"\n"
    elif "x-amz-date" in h:
        date = b"\n"
    else:
        date = h.get("date", "").encode("latin-1") + b"\n"
    amz = sorted(
        {(k.encode("latin-1"), v.encode("utf-8")) for k, v in h.items() if k.startswith("x-amz-")}
    )
    return b"".join(
        [
            method.encode("latin-1"),
            b"\n",
            h.get("content-md5", "").encode("latin-1"),
            b"\n",
            h.get("content-type", "").encode("latin-1"),
            b"\n",
            date,
            *(k + b":" + v + b"\n" for k, v in amz),
            canonical_resource(raw_path, raw_query),
        ]
    )


def sign_v2(secret: str, string_to_sign: bytes) -> str:
    """riak_cs_utils:sha_mac/2, base64: the signature after `AWS key:`."""
    mac = hmac.new(secret.encode("utf-8"), string_to_sign, hashlib.sha1).digest()
    return base64.b64encode(mac).decode()


def _request_time(h: Mapping[str, str]) -> float | None:
    """riak_cs_wm_utils:extract_date/1: x-amz-date, else Date; RFC 1123 or ISO 8601."""
    value = h.get("x-amz-date") or h.get("date") or ""
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        pass
    for fmt in ("%Y%m%dT%H%M%SZ", "%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return dt.datetime.strptime(value, fmt).replace(tzinfo=dt.UTC).timestamp()
        except ValueError:
            continue
    return None


@dataclass(frozen=True)
class Identity:
    access_key: str
    secret_key: str = field(repr=False)


def authenticate(
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]],
    credentials: Mapping[str, str],
    now: float | None = None,
) -> Identity | str:
    """Who signed this request, or the error code Riak CS answers with.

    riak_cs_s3_auth:identify/2 (the Authorization header, else the query's
    AWSAccessKeyId/Signature) and authenticate/4 (clock skew checked only with the
    header; `Expires` in the past fails); failures as riak_cs_wm_common:post_authentication/5
    maps them: an unknown key or a wrong signature is AccessDenied.
    """
    headers = list(headers)
    h = _headers_lower(headers)
    auth = h.get("authorization")
    query = {_text(k): _text(v) for k, v in mochi_parse_qs(split_target(target)[1])}
    if auth is not None:
        if auth.startswith("AWS4-HMAC-SHA256 "):
            return "InvalidRequest"  # riak_cs_s3_auth:parse_auth_header/1, v4 disabled
        if not auth.startswith("AWS "):
            return "AccessDenied"
        tokens = [t for t in auth[4:].split(":") if t]  # string:tokens/2 drops empties
        if len(tokens) != 2:
            return "AccessDenied"
        key_id, signature = tokens
    else:
        key_id, signature = query.get("AWSAccessKeyId", ""), query.get("Signature", "")
        if not key_id:
            return "AccessDenied"  # anonymous: no public objects in the lab
    secret = credentials.get(key_id)
    if secret is None:
        return "AccessDenied"
    now = time.time() if now is None else now
    if auth is not None:
        when = _request_time(h)
        if when is None or abs(when - now) >= MAX_CLOCK_SKEW:
            return "RequestTimeTooSkewed"
    # riak_cs_s3_auth:check_auth/2 is a plain comparison (a lab needs no constant time).
    if sign_v2(secret, string_to_sign_v2(method, target, headers)) != signature:
        return "AccessDenied"
    expires = query.get("Expires")
    if expires is not None and (not expires.isdigit() or now > int(expires)):
        return "AccessDenied"
    return Identity(key_id, secret)


# --- XML as riak_cs_xml renders it -------------------------------------------------------------


def xml_escape(text: bytes | str) -> bytes:
    """xmerl_lib:export_text/1 of the OTP releases Riak CS ships with: `&`, `<`, `>` only
    (quotes stay as they are, other bytes are copied, even control characters)."""
    data = _bytes(text) if isinstance(text, str) else text
    return data.replace(b"&", b"&amp;").replace(b"<", b"&lt;").replace(b">", b"&gt;")


def _el(tag: str, *content: bytes) -> bytes:
    """An element around already-rendered content (xmerl writes `<T></T>` when empty)."""
    return b"<" + tag.encode() + b">" + b"".join(content) + b"</" + tag.encode() + b">"


def _tx(tag: str, text: bytes | str | int | None) -> bytes:
    """A text element; None is empty (riak_cs_xml:format_value(undefined))."""
    if text is None:
        return _el(tag)
    if isinstance(text, int):
        text = str(text)
    return _el(tag, xml_escape(text))


def _doc(root: str, *content: bytes, xmlns: bool = True) -> bytes:
    attr = f' xmlns="{S3_XMLNS}"'.encode() if xmlns else b""
    tag = root.encode()
    return XML_PROLOG + b"<" + tag + attr + b">" + b"".join(content) + b"</" + tag + b">"


@dataclass(frozen=True)
class ListedObject:
    key: bytes
    last_modified: str  # ISO 8601 with milliseconds, riak_cs_wm_utils:iso_8601_format/6
    etag: str  # hex, or hex-N for a multipart object, without quotes
    size: int


@dataclass(frozen=True)
class Owner:
    id: str  # a canonical id: 64 hex characters
    display_name: str


def owner_for(access_key: str) -> Owner:
    """A stable owner for the lab's user (Riak CS lists the object ACL's owner)."""
    return Owner(hashlib.sha256(access_key.encode()).hexdigest(), access_key.lower())


def iso_8601(value: str) -> str:
    """A timestamp as riak_cs_wm_utils:iso_8601_format/6 writes it: always `.000Z`."""
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return value
    when = when.astimezone(dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def list_objects_v1(
    *,
    name: bytes | str,
    prefix: bytes | None,
    marker: bytes | None,
    max_keys: int,
    delimiter: bytes | None,
    truncated: bool,
    contents: list[ListedObject],
    common_prefixes: list[bytes],
    owner: Owner,
) -> bytes:
    """riak_cs_xml:list_objects_response_to_simple_form/1 and key_content_to_simple_form/1.

    Prefix, Marker and Delimiter are always there (empty when not asked); NextMarker only
    when truncated with a delimiter (riak_cs_list_objects_fsm_v2:next_marker/2), and then
    the last key or common prefix of the page; never an EncodingType; keys are raw bytes.
    """
    next_marker = None
    if truncated and delimiter is not None:
        last = [c.key for c in contents[-1:]] + common_prefixes[-1:]
        next_marker = max(last) if last else None
    parts = [
        _tx("Name", name),
        _tx("Prefix", prefix),
        _tx("Marker", marker),
    ]
    if next_marker is not None:
        parts.append(_tx("NextMarker", next_marker))
    parts += [
        _tx("MaxKeys", max_keys),
        _tx("Delimiter", delimiter),
        _tx("IsTruncated", "true" if truncated else "false"),
    ]
    for c in contents:
        parts.append(
            _el(
                "Contents",
                _tx("Key", c.key),
                _tx("LastModified", c.last_modified),
                _tx("ETag", f'"{c.etag}"'),  # riak_cs_utils:etag_from_binary/1 quotes it
                _tx("Size", c.size),
                _tx("StorageClass", "STANDARD"),  # riak_cs_list_objects: hardcoded
                _el("Owner", _tx("ID", owner.id), _tx("DisplayName", owner.display_name)),
            )
        )
    parts += [_el("CommonPrefixes", _tx("Prefix", p)) for p in common_prefixes]
    return _doc("ListBucketResult", *parts)


def initiate_result(bucket: bytes, key: bytes, upload_id: str) -> bytes:
    """riak_cs_wm_object_upload:process_post_helper/2."""
    return _doc(
        "InitiateMultipartUploadResult",
        _tx("Bucket", bucket),
        _tx("Key", key),
        _tx("UploadId", upload_id),
    )


def complete_result(bucket: bytes, key: bytes, etag: str) -> bytes:
    """riak_cs_wm_object_upload_part:process_post/2 (the Location is hardcoded there)."""
    location = b"http://" + bucket + b".s3.amazonaws.com/" + key
    return _doc(
        "CompleteMultipartUploadResult",
        _tx("Location", location),
        _tx("Bucket", bucket),
        _tx("Key", key),
        _tx("ETag", f'"{etag}"'),
    )


def error_document(code: str, message: str, resource: bytes | str) -> bytes:
    """riak_cs_s3_response:error_response/6: no xmlns, an empty RequestId, and the raw
    request path as Resource (riak_cs_s3_rewrite:original_resource/1)."""
    return _doc(
        "Error",
        _tx("Code", code),
        _tx("Message", message),
        _tx("Resource", resource),
        _tx("RequestId", ""),
        xmlns=False,
    )


def no_such_upload_document(upload_id: str) -> bytes:
    """riak_cs_s3_response:no_such_upload_response/3."""
    return _doc(
        "Error",
        _tx("Code", "NoSuchUpload"),
        _tx("Message", ERRORS["NoSuchUpload"][1]),
        _tx("UploadId", upload_id),
        _tx("HostId", "host-id"),
        xmlns=False,
    )


def invalid_digest_document(content_md5: str) -> bytes:
    """riak_cs_s3_response:invalid_digest_response/3 (the Content-MD5 sent is echoed)."""
    return _doc(
        "Error",
        _tx("Code", "InvalidDigest"),
        _tx("Message", ERRORS["InvalidDigest"][1]),
        _tx("Content-MD5", content_md5),
        _tx("HostId", "host-id"),
        xmlns=False,
    )


# --- multipart rules ---------------------------------------------------------------------------


def new_upload_id() -> str:
    """riak_cs_mp_utils:new_manifest/5 takes druuid:v4() (16 bytes, tag 0.2) as the upload
    id and riak_cs_wm_object_upload encodes it with base64url: `+/` become `-_`, the `==`
    padding stays."""
    raw = secrets.token_bytes(16)
    return base64.b64encode(raw).decode().replace("+", "-").replace("/", "_")


def decode_upload_id(upload_id: str) -> bytes | None:
    """base64url:decode/1; None where riak_cs_utils:safe_base64url_decode/1 says `bad`."""
    try:
        return base64.b64decode(upload_id.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        return None


def parse_complete_body(body: bytes) -> list[tuple[int, bytes]] | None:
    """riak_cs_wm_object_upload_part:parse_body/1: `&quot;` dropped, then each Part's
    PartNumber and ETag (quotes stripped, hex decoded); None for anything unparseable."""
    try:
        root = ET.fromstring(body.replace(b"&quot;", b""))
    except ET.ParseError:
        return None
    if root.tag.rpartition("}")[2] != "CompleteMultipartUpload":
        return None
    parts: list[tuple[int, bytes]] = []
    for part in root:
        if part.tag.rpartition("}")[2] != "Part":
            continue
        number = etag = None
        for child in part:
            name = child.tag.rpartition("}")[2]
            if name == "PartNumber":
                number = (child.text or "").strip()
            elif name == "ETag":
                etag = (child.text or "").strip().strip('"')
        try:
            if number is None or etag is None:
                return None
            parts.append((int(number), bytes.fromhex(etag)))
        except ValueError:
            return None
    return parts


@dataclass(frozen=True)
class PartDone:
    size: int
    md5: bytes


def combine_parts(
    requested: list[tuple[int, bytes]], uploaded: Mapping[int, PartDone]
) -> tuple[str, int] | str:
    """riak_cs_mp_utils:comb_parts/2 and eval_part_sizes/1: the completed object's ETag
    (hex MD5 of the parts' binary MD5s, then `-N`) and size, or the error code.

    Part numbers must increase (an exact repeat of the previous entry is skipped), each
    (number, ETag) must be an uploaded part, and every kept part but the last must be at
    least 5 MiB (riak_cs_config:enforce_multipart_part_size/0 defaults to true).
    """
    digest = hashlib.md5()
    kept: list[PartDone] = []
    last: tuple[int, bytes] | None = None
    for number, md5 in requested:
        if last == (number, md5):
            continue
        if number < 1 or (last is not None and number <= last[0]):
            return "InvalidPartOrder"
        done = uploaded.get(number)
        if done is None or done.md5 != md5:
            return "InvalidPart"
        digest.update(md5)
        kept.append(done)
        last = (number, md5)
    if len(kept) > 1 and min(p.size for p in kept[:-1]) < MIN_PART_SIZE:
        return "EntityTooSmall"
    return f"{digest.hexdigest()}-{len(kept)}", sum(p.size for p in kept)


# --- SigV4 for the proxy's own requests to the real server ----------------------------------------


def aws_quote(data: bytes, safe: str = "") -> str:
    """URI encoding as SigV4 wants it: all but A-Z a-z 0-9 - _ . ~ (and `safe`)."""
    return quote(data, safe=safe)


def sign_v4(
    method: str,
    path: str,
    query: list[tuple[str, str]],
    headers: list[tuple[str, str]],
    identity: Identity,
    region: str,
    now: float | None = None,
) -> list[tuple[str, str]]:
    """`headers` plus x-amz-date, x-amz-content-sha256 and Authorization for a request to
    the upstream S3 server. `path` and `query` are already encoded, as sent; the payload is
    not signed (S3's UNSIGNED-PAYLOAD), so the body can be relayed as it arrives."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    day = stamp[:8]
    out = [
        (k, v)
        for k, v in headers
        if k.lower() not in ("authorization", "x-amz-date", "x-amz-content-sha256", "date")
    ]
    out += [("x-amz-date", stamp), ("x-amz-content-sha256", UNSIGNED)]
    signed = sorted(
        (k.lower(), " ".join(v.split()))
        for k, v in out
        if k.lower() in ("host", "content-md5", "content-type") or k.lower().startswith("x-amz-")
    )
    names = ";".join(k for k, _ in signed)
    canonical = "\n".join(
        [
            method,
            path,
            "&".join(f"{k}={v}" for k, v in sorted(query)),
            "".join(f"{k}:{v}\n" for k, v in signed),
            names,
            UNSIGNED,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            stamp,
            scope,
            hashlib.sha256(canonical.encode("latin-1")).hexdigest(),
        ]
    )
    key = ("AWS4" + identity.secret_key).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out.append(
        (
            "Authorization",
            f"AWS4-HMAC-SHA256 Credential={identity.access_key}/{scope}, "
            f"SignedHeaders={names}, Signature={signature}",
        )
    )
    return out


# --- the dialect: requests in, upstream requests out, responses rewritten ------------------


@dataclass
class Reply:
    """An answer the dialect gives itself (or a rewritten upstream answer)."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def reason(self) -> str:
        return REASONS.get(self.status, "Unknown")


def error_reply(code: str, resource: bytes | str, status: int | None = None) -> Reply:
    default_status, message = ERRORS.get(code, (status or 400, code))
    body = error_document(code, message, resource)
    return Reply(status or default_status, body, [("Content-Type", "application/xml")])


@dataclass
class Plan:
    """One client request, understood: what to send upstream and how to answer."""

    # list | initiate | part | complete | abort | upload | uploads | bucket | object | service
    kind: str
    method: str
    raw_path: str
    bucket: bytes
    key: bytes | None
    identity: Identity
    path: str  # upstream path, encoded as sent (and signed)
    query: list[tuple[str, str]]  # upstream query, encoded as sent (and signed)
    headers: list[tuple[str, str]]  # client headers to relay (framing included)
    upload_id: str | None = None  # the Riak CS form the client uses
    part_number: int | None = None
    content_md5: str | None = None
    list_args: dict[str, bytes | None] = field(default_factory=dict)
    max_keys: int = MAX_KEYS
    needs_body: bool = False  # the request body is read whole before forwarding
    completion: tuple[str, int] | None = None  # (ETag, size) once a completion is checked

    @property
    def target(self) -> str:
        q = "&".join(f"{k}={v}" for k, v in self.query)
        return self.path + ("?" + q if q else "")


# Request headers never relayed: the proxy signs anew and frames what it sends itself.
_DROPPED = frozenset(
    {"authorization", "host", "date", "x-amz-date", "x-amz-content-sha256", "expect"}
)


class RiakCSDialect:
    """Riak CS in front of another S3 server, with the test credentials (access -> secret).

    Holds the upload-id map (Riak CS form <-> upstream form) and the uploaded parts'
    sizes and MD5s, which the completion checks need. One event loop uses it; `counters`
    may be read from any thread.
    """

    def __init__(self, credentials: Mapping[str, str], region: str = "us-east-1") -> None:
        if not credentials:
            raise ValueError("the riakcs dialect needs the credentials it checks signatures with")
        self._credentials = dict(credentials)
        self.region = region
        self._to_upstream: dict[str, str] = {}
        self._to_riak: dict[str, str] = {}
        self._parts: dict[str, dict[int, PartDone]] = {}
        self._lock = threading.Lock()
        self._counts: dict[str, int] = dict.fromkeys(
            ("rejected_signatures", "uploads_started", "listings_rewritten", "errors_rewritten"),
            0,
        )

    def __repr__(self) -> str:
        return f"RiakCSDialect(users={sorted(self._credentials)})"

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    # --- requests ------------------------------------------------------------------------------

    def plan(
        self, method: str, target: str, headers: list[tuple[str, str]], now: float | None = None
    ) -> Plan | Reply:
        """The upstream request for this one, or Riak CS's answer without asking upstream."""
        raw_path, raw_query = split_target(target)
        who = authenticate(method, target, headers, self._credentials, now)
        if not isinstance(who, Identity):
            self._count("rejected_signatures")
            return error_reply(who, raw_path)
        bucket, key = bucket_and_key(raw_path)
        params = mochi_parse_qs(raw_query)
        names = {_text(k) for k, _ in params}
        h = _headers_lower(headers)
        relayed = [(k, v) for k, v in headers if k.lower() not in _DROPPED]
        if not bucket:
            kind = "service"
        elif key is None:
            if method == "GET" and not names & SUBRESOURCES:
                kind = "list"
            elif "uploads" in names and method == "GET":
                kind = "uploads"
            else:
                kind = "bucket"
        elif method == "POST" and "uploads" in names:
            kind = "initiate"
        elif "uploadId" in names:
            kind = {"PUT": "part", "POST": "complete", "DELETE": "abort"}.get(method, "upload")
        else:
            kind = "object"
        path = "/" + aws_quote(bucket) if bucket else "/"
        if key is not None:
            path += "/" + aws_quote(key, safe="/")
        elif bucket:
            path += "/"
        plan = Plan(
            kind=kind,
            method=method,
            raw_path=raw_path,
            bucket=bucket,
            key=key,
            identity=who,
            path=path,
            query=[],
            headers=relayed,
            content_md5=h.get("content-md5"),
        )
        if kind == "list":
            return self._plan_list(plan, params)
        upload_id = next((_text(v) for k, v in params if k == b"uploadId"), None)
        if upload_id is not None:
            plan.upload_id = upload_id
            with self._lock:
                upstream_id = self._to_upstream.get(upload_id)
            if upstream_id is None:
                return Reply(
                    404,
                    no_such_upload_document(upload_id),
                    [("Content-Type", "application/xml")],
                )
            params = [(k, _bytes(upstream_id) if k == b"uploadId" else v) for k, v in params]
        if kind == "part":
            number = next((_text(v) for k, v in params if k == b"partNumber"), "")
            if not number.isdigit() or not 1 <= int(number) <= MAX_PART_NUMBER:
                # riak_cs_wm_object_upload_part:malformed_request/2
                reply = error_reply("InvalidArgument", raw_path)
                reply.body = error_document("InvalidArgument", PART_NUMBER_MESSAGE, raw_path)
                return reply
            plan.part_number = int(number)
        plan.needs_body = kind == "complete"
        plan.query = [(aws_quote(k), aws_quote(v)) for k, v in params]
        return plan

    def _plan_list(self, plan: Plan, params: list[tuple[bytes, bytes]]) -> Plan | Reply:
        """riak_cs_wm_objects:get_options/1 and get_max_keys/1: only these four are read."""
        args: dict[str, bytes | None] = dict.fromkeys(("prefix", "delimiter", "marker"))
        max_keys = MAX_KEYS
        for k, v in params:
            name = _text(k)
            if name in args and args[name] is None:
                args[name] = v
            elif name == "max-keys":
                try:
                    max_keys = min(int(_text(v)), MAX_KEYS)
                except ValueError:
                    return error_reply("InvalidArgument", plan.raw_path)
        plan.list_args, plan.max_keys = args, max_keys
        # Upstream: V1 with URL-encoded keys, so any key survives its XML.
        query = [("encoding-type", "url"), ("max-keys", str(max(max_keys, 0)))]
        query += [(n, aws_quote(v)) for n, v in args.items() if v is not None]
        plan.query = [(aws_quote(_bytes(k)), v) for k, v in query]
        return plan

    def check_body(self, plan: Plan, body: bytes) -> Reply | None:
        """A completion's body against the parts uploaded (riak_cs_mp_utils:comb_parts/2)."""
        requested = parse_complete_body(body)
        if requested is None:
            return Reply(BAD_COMPLETE_BODY_STATUS)
        assert plan.upload_id is not None
        with self._lock:
            uploaded = dict(self._parts.get(plan.upload_id, {}))
        result = combine_parts(requested, uploaded)
        if isinstance(result, str):
            return error_reply(result, plan.raw_path)
        plan.completion = result
        return None

    def upstream_headers(
        self, plan: Plan, host: str, body_length: int | None
    ) -> list[tuple[str, str]]:
        """The signed headers for the upstream request (`body_length`: a body replaced by
        one of that length; None relays the client's framing headers)."""
        headers = [("Host", host)]
        for k, v in plan.headers:
            low = k.lower()
            if body_length is not None and low in ("content-length", "transfer-encoding"):
                continue
            headers.append((k, v))
        if body_length is not None:
            headers.append(("Content-Length", str(body_length)))
        return sign_v4(plan.method, plan.path, plan.query, headers, plan.identity, self.region)

    # --- responses ------------------------------------------------------------------------------

    def streams(self, plan: Plan, status: int) -> bool:
        """Whether the upstream answer is relayed as it comes (object bodies) rather than
        read whole and rewritten."""
        return plan.kind == "object" and plan.method in ("GET", "HEAD") and status < 300

    def response(
        self, plan: Plan, status: int, headers: list[tuple[str, str]], body: bytes
    ) -> Reply:
        """Upstream's answer, as Riak CS would give it."""
        kept = [
            (k, v)
            for k, v in headers
            if k.lower() not in ("content-length", "transfer-encoding", "connection")
        ]
        if status >= 300:
            return self._error(plan, status, body)
        if plan.kind == "list":
            return self._listing(plan, body)
        if plan.kind == "initiate":
            return self._initiated(plan, body)
        if plan.kind == "part":
            return self._part_done(plan, kept)
        if plan.kind == "complete":
            return self._completed(plan, body)
        if plan.kind == "abort":
            with self._lock:
                self._forget(plan.upload_id)
        if plan.kind in ("upload", "uploads"):
            body = self._riak_ids(body)
        return Reply(status, body, kept)

    def _error(self, plan: Plan, status: int, body: bytes) -> Reply:
        """Upstream's error in riak_cs_s3_response's shapes (codes kept where Riak CS has
        them; BadDigest becomes InvalidDigest, Riak CS has no other digest error)."""
        self._count("errors_rewritten")
        code = ""
        with contextlib.suppress(ET.ParseError):
            root = ET.fromstring(body) if body else None
            if root is not None:
                code = next((c.text or "" for c in root if c.tag.endswith("Code")), "")
        xml = [("Content-Type", "application/xml")]
        if plan.method == "HEAD":
            return Reply(status, b"", xml)
        if code in ("BadDigest", "InvalidDigest"):
            return Reply(400, invalid_digest_document(plan.content_md5 or ""), xml)
        if code == "NoSuchUpload":
            return Reply(404, no_such_upload_document(plan.upload_id or ""), xml)
        if not code:
            code = {403: "AccessDenied", 404: "NoSuchKey"}.get(status, "ServiceUnavailable")
        message = ERRORS.get(code, (status, code))[1]
        return Reply(status, error_document(code, message, plan.raw_path), xml)

    def _listing(self, plan: Plan, body: bytes) -> Reply:
        root = ET.fromstring(body)
        encoded = any(
            c.tag.endswith("EncodingType") and (c.text or "").lower() == "url" for c in root
        )

        def key_of(text: str | None) -> bytes:
            text = text or ""
            return _bytes(unquote_plus(text) if encoded else text)

        contents: list[ListedObject] = []
        prefixes: list[bytes] = []
        truncated = False
        for child in root:
            tag = child.tag.rpartition("}")[2]
            if tag == "Contents":
                f = {c.tag.rpartition("}")[2]: c.text or "" for c in child}
                contents.append(
                    ListedObject(
                        key=key_of(f.get("Key")),
                        last_modified=iso_8601(f.get("LastModified", "")),
                        etag=f.get("ETag", "").strip('"'),
                        size=int(f.get("Size") or 0),
                    )
                )
            elif tag == "CommonPrefixes":
                prefixes += [key_of(c.text) for c in child if c.tag.endswith("Prefix")]
            elif tag == "IsTruncated":
                truncated = (child.text or "").strip().lower() == "true"
        self._count("listings_rewritten")
        xml = list_objects_v1(
            name=plan.bucket,
            prefix=plan.list_args.get("prefix"),
            marker=plan.list_args.get("marker"),
            max_keys=plan.max_keys,
            delimiter=plan.list_args.get("delimiter"),
            truncated=truncated,
            contents=contents,
            common_prefixes=prefixes,
            owner=owner_for(plan.identity.access_key),
        )
        return Reply(200, xml, [("Content-Type", "application/xml")])

    def _initiated(self, plan: Plan, body: bytes) -> Reply:
        upstream_id = next(
            (c.text or "" for c in ET.fromstring(body) if c.tag.endswith("UploadId")), ""
        )
        riak_id = new_upload_id()
        with self._lock:
            self._to_upstream[riak_id] = upstream_id
            self._to_riak[upstream_id] = riak_id
            self._parts[riak_id] = {}
        self._count("uploads_started")
        assert plan.key is not None
        xml = initiate_result(plan.bucket, plan.key, riak_id)
        return Reply(200, xml, [("Content-Type", "application/xml")])

    def _part_done(self, plan: Plan, headers: list[tuple[str, str]]) -> Reply:
        """Remember the part for the completion; its ETag is the quoted hex MD5
        (riak_cs_manifest:etag/1), whatever quoting upstream used."""
        etag = next((v for k, v in headers if k.lower() == "etag"), "").strip().strip('"')
        length = next((v for k, v in plan.headers if k.lower() == "content-length"), "0")
        assert plan.upload_id is not None and plan.part_number is not None
        try:
            done = PartDone(int(length), bytes.fromhex(etag))
        except ValueError:
            done = PartDone(int(length) if length.isdigit() else 0, b"")
        with self._lock:
            self._parts.setdefault(plan.upload_id, {})[plan.part_number] = done
        out = [(k, v) for k, v in headers if k.lower() != "etag"]
        return Reply(200, b"", [*out, ("ETag", f'"{etag}"')])

    def _completed(self, plan: Plan, body: bytes) -> Reply:
        xml = [("Content-Type", "application/xml")]
        try:
            root = ET.fromstring(body) if body.strip() else None
        except ET.ParseError:
            root = None
        if root is not None and root.tag.rpartition("}")[2] == "Error":
            # S3's 200-with-an-error after a long completion: as an error of Riak CS's form.
            return self._error(plan, 200, body)
        with self._lock:
            self._forget(plan.upload_id)
        assert plan.completion is not None and plan.key is not None
        etag, _size = plan.completion
        return Reply(200, complete_result(plan.bucket, plan.key, etag), xml)

    def _forget(self, riak_id: str | None) -> None:
        if riak_id is None:
            return
        upstream_id = self._to_upstream.pop(riak_id, None)
        self._to_riak.pop(upstream_id or "", None)
        self._parts.pop(riak_id, None)

    def _riak_ids(self, body: bytes) -> bytes:
        """Upstream ids in a ListParts / ListMultipartUploads answer, in Riak CS's form."""

        def swap(m: re.Match[bytes]) -> bytes:
            with self._lock:
                riak = self._to_riak.get(_text(m.group(1)))
            return b"<UploadId>" + (_bytes(riak) if riak else m.group(1)) + b"</UploadId>"

        return re.sub(rb"<UploadId>([^<]*)</UploadId>", swap, body)


__all__ = [
    "ERRORS",
    "MAX_KEYS",
    "MIN_PART_SIZE",
    "SUBRESOURCES",
    "Identity",
    "ListedObject",
    "Owner",
    "Plan",
    "Reply",
    "RiakCSDialect",
    "authenticate",
    "bucket_and_key",
    "canonical_resource",
    "combine_parts",
    "complete_result",
    "decode_upload_id",
    "error_document",
    "initiate_result",
    "invalid_digest_document",
    "list_objects_v1",
    "mochi_parse_qs",
    "mochi_unquote",
    "new_upload_id",
    "no_such_upload_document",
    "owner_for",
    "parse_complete_body",
    "sign_v2",
    "string_to_sign_v2",
]
