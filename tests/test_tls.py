"""A new store reached over HTTPS with a CA bundle (the Amazon S3 target shape)."""

from __future__ import annotations

import pytest
from conftest import BASE_PORT, NEW_IP, NEW_KEYS, store_dict, write_settings
from helpers import contents, md5s, random_blobs, run_cli, seed

from blobshift.lab.seaweed import SeaweedServer
from blobshift.lab.tls import make_lab_ca


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("tls")
    ca, cert, key = make_lab_ca(root / "ca", NEW_IP)
    server = SeaweedServer(
        NEW_IP, BASE_PORT + 60, root / "s3", *NEW_KEYS, ["tls-bucket"], tls=(cert, key)
    )
    server.start()
    yield server, ca
    # Its data is thrown away: no need to wait out weed's graceful stop (20 s over TLS).
    server.stop(timeout=3)


def test_backfill_to_https_store_with_ca_bundle(tls_server, old_server, buckets, tmp_path):
    server, ca = tls_server
    old_b, _ = buckets
    blobs = random_blobs(40, 2000)
    seed(old_server, old_b, blobs)
    new = store_dict(server, "tls-bucket", sigv2=False) | {
        "url": server.https_url,
        "verify": str(ca),
    }
    settings = write_settings(tmp_path / "ls.py", new, store_dict(old_server, old_b, sigv2=True))
    run_cli("migrate-backend", "--settings", settings, "--log-dir", tmp_path / "l", check=0)
    run_cli("verify", "--settings", settings, check=0)
    assert contents(server, "tls-bucket") == md5s(blobs)

    # Without the CA bundle the certificate cannot be verified: refused before any copy.
    untrusted = write_settings(
        tmp_path / "ls2.py", new | {"verify": True}, store_dict(old_server, old_b, sigv2=True)
    )
    proc = run_cli(
        "migrate-backend", "--settings", untrusted, "--log-dir", tmp_path / "l2", check=3
    )
    assert f"cannot reach {server.https_url}" in proc.stderr
    assert "certificate verify failed" in proc.stderr
