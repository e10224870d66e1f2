"""`make demo`: a whole backfill on two real local S3 servers, audited at the end.

Starts an old "Riak CS" (SeaweedFS on 127.0.0.2, used with SigV2 and ListObjects V1)
and a new store (SeaweedFS on 127.0.0.3, SigV4), seeds mixed blobs with a manifest,
plays the app (new blobs written to the new store, deletions during the run), then
runs the operator's commands: migrate-backend, check-blob-logs, verify.
It ends with an audit of every blob the seed or the app wrote and did not delete.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from blobshift.lab.audit import missing_or_different
from blobshift.lab.seaweed import SeaweedServer, settings_text
from blobshift.lab.seed import SeedSpec, seed_store
from blobshift.runfiles import utc_iso
from blobshift.s3.client import S3Client
from blobshift.settings import load_settings

OLD_IP, NEW_IP = "127.0.0.2", "127.0.0.3"
# Lab-only credentials: these servers live on loopback for the length of the demo.
OLD_CREDS = ("LABOLDACCESS", "lab-old-secret-not-for-production")
NEW_CREDS = ("LABNEWACCESS", "lab-new-secret-not-for-production")


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def run(args: list[str]) -> tuple[int, float]:
    print("$ " + shlex.join(["blobshift", *args[3:]]), flush=True)
    started = time.monotonic()
    code = subprocess.call(args)
    return code, time.monotonic() - started


async def app_activity(settings_path: Path, manifest: Path, current: Path) -> dict:
    """What the app does while migrating: writes to new, updates one blob, deletes some."""
    settings = load_settings(settings_path)
    assert settings.old is not None
    new, old = S3Client(settings.new), S3Client(settings.old)
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
    written: dict[str, str] = {}
    try:
        for i in range(25):
            body = f"written by the app during the migration #{i}".encode()
            key = f"app-new/{i:04d}"
            await new.put(key, body, {})
            written[key] = hashlib.md5(body).hexdigest()
        deleted = [r["blob_key"] for r in rows[10:16]]
        for key in deleted:  # the app deletes from both stores while migrating
            await old.delete(key)
            await new.delete(key)
    finally:
        new.close()
        old.close()
    kept = [r for r in rows if r["blob_key"] not in deleted]
    current.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    return {"written": written, "deleted": deleted}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blobs", type=int, default=3000, help="blobs to seed (default 3000)")
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="output directory")
    parser.add_argument("--base-port", type=int, default=9000)
    args = parser.parse_args(argv)

    out = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    (out / "logs").mkdir(parents=True)
    old = SeaweedServer(OLD_IP, args.base_port, out / "s3-old", *OLD_CREDS, ["blobdb"])
    new = SeaweedServer(NEW_IP, args.base_port + 100, out / "s3-new", *NEW_CREDS, ["blobdb"])
    cli = [sys.executable, "-m", "blobshift.cli"]
    report: dict = {"started": utc_iso(), "blobs_seeded": args.blobs}
    try:
        step(f"starting two SeaweedFS S3 servers: old {old.url} (SigV2), new {new.url} (SigV4)")
        old.start()
        new.start()
        settings = out / "localsettings.py"
        settings.write_text(
            settings_text(
                new.settings_dict("blobdb", riak=False),
                old.settings_dict("blobdb", riak=True),
                True,
            )
        )
        settings.chmod(0o640)

        step(f"seeding {args.blobs} blobs of mixed sizes into the old store")
        manifest, current = out / "manifest.jsonl", out / "manifest-current.jsonl"
        old_store = load_settings(settings).old
        assert old_store is not None
        seeded = asyncio.run(seed_store(old_store, manifest, SeedSpec(args.blobs)))

        step("the app, now migrating: writes 25 new blobs to the new store, deletes six")
        app = asyncio.run(app_activity(settings, manifest, current))
        expected = {k: v for k, v in seeded.items() if k not in app["deleted"]}
        expected.update(app["written"])

        step("backfill")
        logs = out / "logs"
        code, secs = run(
            [
                *cli,
                "migrate-backend",
                "--settings",
                str(settings),
                "--log-dir",
                str(logs),
                "--keys-from",
                str(manifest),
                # SeaweedFS fails the key probe for "a//b" and "x/" (the seed has none).
                "--log-unfaithful-keys",
            ]
        )
        status = json.loads((logs / "migrate_backend-status.json").read_text())
        report["backfill"] = {"exit": code, "seconds": round(secs, 1), **status["counts"]}
        report["backfill"]["log"] = status["log"]

        step("check the logged blobs")
        check_json = out / "check-blob-logs.json"
        code, _ = run(
            [
                *cli,
                "check-blob-logs",
                "--settings",
                str(settings),
                status["log"],
                "--keys-from",
                str(current),
                "--json-file",
                str(check_json),
            ]
        )
        report["check_blob_logs"] = {"exit": code, **json.loads(check_json.read_text())["totals"]}

        step("verify: every old blob present and intact in the new store")
        verify_json = out / "verify.json"
        code, secs = run(
            [
                *cli,
                "verify",
                "--settings",
                str(settings),
                "--checksum",
                "--report",
                str(verify_json),
            ]
        )
        v = json.loads(verify_json.read_text())
        report["verify"] = {"exit": code, "clean": v["clean"], "seconds": round(secs, 1)}

        step("audit: every blob seeded or written by the app, and not deleted, in new")
        bad = asyncio.run(missing_or_different(load_settings(settings).new, expected))
        report["audit"] = {"expected": len(expected), "missing_or_different": len(bad)}
        report["audit"]["keys"] = bad[:100]
    finally:
        old.stop()
        new.stop()
    report["finished"] = utc_iso()
    path = out / "report.json"
    path.write_text(json.dumps(report, indent=1) + "\n")

    b, c = report["backfill"], report["check_blob_logs"]
    step("summary")
    print(f"blobs in old at the start: {args.blobs}")
    print(
        f"backfill: listed {b['listed']}, copied {b['copied']}, skipped (already in new) "
        f"{b['skipped']}, logged {b['logged']}, in {b['seconds']}s"
    )
    print("logged blobs: " + ", ".join(f"{k}: {n}" for k, n in c.items() if k != "exit"))
    print(f"verify: {'clean' if report['verify']['clean'] else 'NOT clean'}")
    print(f"audit: {report['audit']['missing_or_different']} missing of {len(expected)} expected")
    print(f"report: {path}")
    ok = report["verify"]["clean"] and not bad and c["Not found"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
