"""testinfra checks of one state of the state table (BLOBSHIFT_STATE, set per scenario).

Checks, on the converged lab: which proxy ports listen, which nodes each site's upstream
lists, the rendered localsettings.py (loaded with blobshift's settings loader), and that
SigV4 and SigV2 object requests through each proxy port, and through the app's own
settings, land in the expected real S3 server.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import boto3
import pytest
import testinfra
from botocore.config import Config
from botocore.exceptions import ClientError

from blobshift.settings import load_settings

STATE = os.environ["BLOBSHIFT_STATE"]
ROOT = Path(os.environ.get("BLOBSHIFT_MOLECULE_ROOT", "/tmp/blobshift-molecule"))
MAIN, TEMP = 18080, 18081
OLD_NODE, NEW_NODE = "127.0.0.2:19800", "127.0.0.3:19820"
NEW_KEYS = ("LABNEWACCESSKEY", "lab-new-secret-key-not-secret")
OLD_KEYS = ("LABOLDACCESSKEY", "lab-old-secret-key-not-secret")
BUCKET = "blobdb"
SETTINGS = ROOT / "app" / "localsettings.py"
BLOB_SETTINGS = ROOT / "app" / "blobshift_settings.py"
SITES = ROOT / "nginx" / "sites-enabled"

# state -> (node behind :18080, node behind :18081 or None, new store url, old store url)
EXPECTED = {
    "steady": (OLD_NODE, None, f"http://127.0.0.1:{MAIN}", None),
    "migrating_riakcs": (
        OLD_NODE,
        NEW_NODE,
        f"http://127.0.0.1:{TEMP}",
        f"http://127.0.0.1:{MAIN}",
    ),
    "migrating_external": (OLD_NODE, None, f"http://{NEW_NODE}", f"http://127.0.0.1:{MAIN}"),
    "flipping": (NEW_NODE, NEW_NODE, f"http://127.0.0.1:{MAIN}", None),
    "done": (NEW_NODE, None, f"http://127.0.0.1:{MAIN}", None),
}
MAIN_NODE, TEMP_NODE, NEW_URL, OLD_URL = EXPECTED[STATE]


@pytest.fixture(scope="module")
def local():
    return testinfra.get_host("local://")


def client(url: str, keys: tuple[str, str], sig: str):
    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=keys[0],
        aws_secret_access_key=keys[1],
        region_name="us-east-1",
        config=Config(
            signature_version=sig,
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            connect_timeout=3,
            read_timeout=20,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def where(key: str) -> set[str]:
    """Which real server holds `key` (asked directly, bypassing nginx)."""
    found = set()
    for node, keys in ((OLD_NODE, OLD_KEYS), (NEW_NODE, NEW_KEYS)):
        try:
            client(f"http://{node}", keys, "s3v4").head_object(Bucket=BUCKET, Key=key)
            found.add(node)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("404", "NoSuchKey", "NotFound"):
                raise
    return found


def test_ports_listening(local):
    assert local.socket(f"tcp://127.0.0.1:{MAIN}").is_listening
    assert local.socket(f"tcp://127.0.0.1:{TEMP}").is_listening == (TEMP_NODE is not None)


def upstream_servers(path: Path) -> list[str]:
    return re.findall(r"^\s*server\s+(\S+);", path.read_text(), re.M)


def test_sites_and_upstreams():
    enabled = sorted(p.name for p in SITES.iterdir())
    expected = ["blobshift_riakcs"] + (["blobshift_riakcs_new"] if TEMP_NODE else [])
    assert enabled == expected
    assert upstream_servers(SITES / "blobshift_riakcs") == [MAIN_NODE]
    if TEMP_NODE:
        assert upstream_servers(SITES / "blobshift_riakcs_new") == [TEMP_NODE]
    else:
        assert not (ROOT / "nginx/sites-available/blobshift_riakcs_new").exists()
    text = (SITES / "blobshift_riakcs").read_text()
    for directive in (
        "least_conn;",
        "proxy_set_header Host $http_host;",
        "proxy_request_buffering off;",
        "proxy_next_upstream error timeout http_502 http_504 http_403;",
        "proxy_next_upstream_tries 3;",
        "client_max_body_size 9M;",
        "server_tokens off;",
    ):
        assert directive in text


def test_rendered_settings(local):
    f = local.file(str(SETTINGS))
    assert f.mode == 0o640
    assert f.user == "root"
    # The app's file only includes the blob store settings; their own file holds them.
    assert "# BEGIN blobshift: the blob store settings" in f.content_string
    assert "secret_key" not in f.content_string
    blob = local.file(str(BLOB_SETTINGS))
    assert blob.mode == 0o640 and blob.user == "root" and "secret_key" in blob.content_string
    assert load_settings(BLOB_SETTINGS).new.url == NEW_URL
    settings = load_settings(SETTINGS)
    assert settings.new.url == NEW_URL
    assert settings.new.access_key == NEW_KEYS[0]
    assert settings.migrating == (OLD_URL is not None)
    if OLD_URL is None:
        assert settings.old is None
    else:
        assert settings.old.url == OLD_URL
        assert settings.old.access_key == OLD_KEYS[0]
        assert settings.old.signature_version == "s3"
        assert settings.old.list_version == 1
    assert (ROOT / "app" / "restarts.log").exists()


@pytest.mark.parametrize("sig", ["s3v4", "s3"])
@pytest.mark.parametrize("port", [MAIN, TEMP])
def test_request_through_proxy_reaches_expected_store(port, sig):
    node = MAIN_NODE if port == MAIN else TEMP_NODE
    if node is None:
        pytest.skip(f"no site on :{port} in state {STATE}")
    keys = OLD_KEYS if node == OLD_NODE else NEW_KEYS
    s3 = client(f"http://127.0.0.1:{port}", keys, sig)
    key = f"proxy-{port}-{sig}-{uuid.uuid4().hex}"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"through the proxy")
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"through the proxy"
    assert where(key) == {node}


@pytest.mark.parametrize("store", ["new", "old"])
def test_app_settings_write_to_expected_store(store):
    settings = load_settings(SETTINGS)
    chosen = settings.new if store == "new" else settings.old
    if chosen is None:
        pytest.skip(f"no {store} store in state {STATE}")
    s3 = client(chosen.url, (chosen.access_key, chosen.secret_key), chosen.signature_version)
    key = f"app-{store}-{uuid.uuid4().hex}"
    s3.put_object(Bucket=chosen.bucket, Key=key, Body=b"app write")
    expected = {
        "steady": OLD_NODE,
        "flipping": NEW_NODE,
        "done": NEW_NODE,
    }.get(STATE, NEW_NODE if store == "new" else OLD_NODE)
    assert where(key) == {expected}


def test_nginx_reloaded_not_restarted():
    """The master process started in state1 is the one serving every later state."""
    pid = (ROOT / "nginx" / "nginx.pid").read_text().strip()
    first = ROOT / "first-nginx-master-pid"
    if STATE == "steady" and not first.exists():
        first.write_text(pid)
    assert first.read_text() == pid
