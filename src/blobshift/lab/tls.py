"""A lab-only certificate authority and server certificate (openssl CLI), so the lab can
serve S3 over HTTPS the way an external store (Amazon S3) is reached."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_lab_ca(directory: Path, ip: str) -> tuple[Path, Path, Path]:
    """(CA bundle, server certificate, server key) for a server on `ip`; reused if present."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (
        directory / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    if cert.exists() and ca.exists() and key.exists():
        return ca, cert, key
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
        "-days",
        "30",
        "-subj",
        "/CN=blobshift lab CA (lab only)",
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        f"/CN={ip}",
    )
    ext = directory / "server.ext"
    ext.write_text(f"subjectAltName=IP:{ip}\nbasicConstraints=CA:FALSE\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        "30",
        "-extfile",
        str(ext),
    )
    for path in (ca_key, key):
        path.chmod(0o600)
    return ca, cert, key
