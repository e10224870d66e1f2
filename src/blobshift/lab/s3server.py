"""What the lab and the tests need of an S3 server they start and stop themselves."""

from __future__ import annotations

from typing import Any, Protocol

import boto3
from botocore.config import Config


class S3Server(Protocol):
    """A server `running()` can start and stop: SeaweedServer, CephRGW and their gateways."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class S3Endpoint:
    """One S3 address of a lab server, as the tests and the lab use it: its URL, the
    settings dict the app's localsettings.py would hold for it, a boto3 client."""

    ip: str
    access_key: str
    secret_key: str

    @property
    def s3_port(self) -> int:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.s3_port}"

    def settings_dict(self, bucket: str, *, riak: bool, chunk: int = 500) -> dict[str, Any]:
        """This store as the app's localsettings.py describes one; `riak`: used the way a
        Riak CS store is (SigV2 requests, ListObjects V1)."""
        return {
            "url": self.url,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "s3_bucket": bucket,
            "bulk_delete_chunksize": chunk,
            "list_version": 1 if riak else 2,
            "config": {
                "signature_version": "s3" if riak else "s3v4",
                "s3": {"addressing_style": "path"},
                "connect_timeout": 5,
                "read_timeout": 60,
                "max_pool_connections": 32,
            },
        }

    def client(self, signature_version: str = "s3v4") -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(
                signature_version=signature_version,
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                connect_timeout=2,
                read_timeout=10,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )
