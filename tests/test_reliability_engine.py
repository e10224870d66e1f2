"""The engine's part of the reliability battery (docs/RELIABILITY.md): faults during a
backfill, bad input on the command line, and secrets kept out of everything it leaves.

Real SeaweedFS servers, real CLI subprocesses. Every case records its figures in the
`evidence` fixture; the faults cases compare the MD5 of every key, old against new.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import NEW_KEYS, OLD_KEYS, store_dict, write_settings
from helpers import (
    backfill_cmd,
    contents,
    md5s,
    random_blobs,
    read_json,
    run_cli,
    seed,
    wait_until,
    write_manifest,
)

from blobshift.runfiles import Checkpoint, read_log_records

SECRETS = (OLD_KEYS[1], NEW_KEYS[1])
CHECKPOINT = "migrate_backend-checkpoint.json"
STATUS = "migrate_backend-status.json"


# -- shared helpers -------------------------------------------------------------------


def logged_keys(log_dir: Path) -> Counter[str]:
    """How many times each key appears across every missing-blob log of the dir."""
    seen: Counter[str] = Counter()
    for path in sorted(log_dir.glob("*-blob-migration-*.txt")):
        if not path.name.endswith("-summary.txt"):
            seen.update(r["blob_key"] for r in read_log_records(path)[0])
    return seen


def manifest_with_gaps(
    path: Path, present: dict[str, bytes], absent: int, lead: int = 0
) -> list[str]:
    """A manifest of `present` keys (the first `lead` of them at its head) with `absent`
    keys (not in old) interleaved: the backfill logs each absent one. The absent keys."""
    gone = [f"gone/{i:05d}" for i in range(absent)]
    head = sorted(present)[:lead]
    rest = sorted(present)[lead:] + gone
    keys = head + sorted(rest, key=lambda k: hashlib.md5(k.encode()).hexdigest())
    write_manifest(path, ({"blob_key": k, "parent_id": "p", "type_code": "form"} for k in keys))
    return gone


def valid_checkpoint(log_dir: Path) -> Checkpoint:
    """The engine's own reader must accept the checkpoint (it raises if corrupt)."""
    cp = Checkpoint.load(log_dir / CHECKPOINT)
    assert cp is not None
    return cp


def lost(expected: dict[str, bytes], got: dict[str, str]) -> int:
    want = md5s(expected)
    return sum(1 for k, m in want.items() if got.get(k) != m)


def one_line(stderr: str) -> str:
    """The error message: exactly one non-empty line on stderr, no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    return lines[0]


def no_secret(*texts: str) -> None:
    for secret in SECRETS:
        assert not any(secret in t for t in texts), f"secret {secret[:6]}... leaked"


def dir_texts(log_dir: Path) -> list[str]:
    if not log_dir.exists():
        return []
    return [p.read_text(errors="replace") for p in log_dir.rglob("*") if p.is_file()]


# -- faults ---------------------------------------------------------------------------


def kill_at(cmd: list[str], log_dir: Path, offset: int) -> int:
    """Start a backfill, SIGKILL it once its checkpoint has passed manifest byte `offset`
    (it is then in the middle of the next chunk); the checkpoint position at the kill."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(
            lambda: (
                proc.poll() is not None
                or int((read_json(log_dir / CHECKPOINT) or {}).get("position") or 0) >= offset
            ),
            f"checkpoint past byte {offset}",
        )
        assert proc.poll() is None, "the backfill finished before it could be killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return int(valid_checkpoint(log_dir).position)


@pytest.mark.reliability(
    "kill -9 of the backfill five times at random points, then resume: every blob once",
    group="Faults",
)
def test_kill_9_five_times_then_resume(
    settings_file, old_server, new_server, buckets, tmp_path, evidence
):
    old_b, new_b = buckets
    blobs = random_blobs(500, 512)
    seed(old_server, old_b, blobs)
    manifest = tmp_path / "manifest.jsonl"
    gone = manifest_with_gaps(manifest, blobs, 50)
    size = manifest.stat().st_size
    log_dir = tmp_path / "logs"
    cmd = backfill_cmd(
        settings_file,
        log_dir,
        "--keys-from",
        manifest,
        "--chunk-size",
        "20",
        "--num-workers",
        "4",
        "--max-rps",
        "150",
    )
    seed_ = random.randrange(2**32)
    rng = random.Random(seed_)
    # One random kill point in each fifth of the first 90% of the manifest.
    targets = [int(size * 0.9 * (i + rng.random()) / 5) for i in range(5)]
    positions = []
    for target in targets:
        position = kill_at(cmd, log_dir, max(target, (positions or [0])[-1] + 1))
        assert not positions or position >= positions[-1], "checkpoint went backwards"
        positions.append(position)

    # Exit 1 when the rest of the manifest still holds gone keys (logged), else 0: the
    # last kill may land past the last of them.
    rest = manifest.read_bytes()[positions[-1] :].decode()
    still_gone = sum(1 for k in gone if f'"{k}"' in rest)
    resumed = run_cli(*cmd[3:], check=1 if still_gone else 0)
    assert f"from key after {str(positions[-1])!r}" in resumed.stdout
    final = valid_checkpoint(log_dir)
    assert final.complete and len(final.logs) == 6
    got = contents(new_server, new_b)
    logged = logged_keys(log_dir)
    assert lost(blobs, got) == 0 and set(got) == set(blobs)
    assert set(logged) == set(gone), "a gone key was not logged, or a present one was"
    duplicates = sum(n - 1 for n in logged.values())
    assert duplicates == 0, logged.most_common(3)
    evidence.update(
        {
            "seed": seed_,
            "blobs": len(blobs),
            "kills": len(positions),
            "checkpoints valid after each kill": len(positions),
            "kill points (% of manifest)": ", ".join(f"{100 * p / size:.0f}" for p in positions),
            "blobs lost": 0,
            "gone keys logged once": len(gone),
            "duplicate log lines": duplicates,
        }
    )


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small filesystem of its own at `path` (we run as root in the lab)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.reliability(
    "The log dir's filesystem fills up: the run stops with a one-line message and a valid "
    "checkpoint, and resumes once space is freed",
    group="Faults",
)
def test_full_log_dir_stops_cleanly_then_resumes(
    settings_file, old_server, new_server, buckets, tmp_path, evidence
):
    old_b, new_b = buckets
    blobs = random_blobs(200, 512)
    seed(old_server, old_b, blobs)
    manifest = tmp_path / "manifest.jsonl"
    # 400 keys gone from old: ~45 KB of log lines, more than the 32 KiB tmpfs holds; 60
    # present keys first, so checkpoints are saved before the disk fills.
    gone = manifest_with_gaps(manifest, blobs, 400, lead=60)
    # SeaweedFS's first write to a fresh bucket takes a second or so (it allocates a
    # volume); meanwhile the log would fill the disk before the first checkpoint.
    new_client = new_server.client()
    new_client.put_object(Bucket=new_b, Key="warm-up", Body=b"x")
    new_client.delete_object(Bucket=new_b, Key="warm-up")
    with tmpfs(tmp_path / "small", "32k") as mount:
        log_dir = mount / "logs"
        args = backfill_cmd(settings_file, log_dir, "--keys-from", manifest, "--chunk-size", "20")[
            3:
        ]
        full = run_cli(*args, check=5)
        message = one_line(full.stderr)
        assert f"log dir {log_dir}" in message and "No space left on device" in message
        assert "free space there, then re-run to resume" in message
        stopped_at = valid_checkpoint(log_dir)
        assert not stopped_at.complete

        # Free space: the same filesystem, grown.
        subprocess.run(["mount", "-o", "remount,size=1m", str(mount)], check=True)
        resumed = run_cli(*args, check=1)  # 1: the gone keys are logged
        assert f"from key after {stopped_at.position!r}" in resumed.stdout
        assert valid_checkpoint(log_dir).complete
        got = contents(new_server, new_b)
        logged = logged_keys(log_dir)
        assert lost(blobs, got) == 0 and set(got) == set(blobs)
        assert set(logged) == set(gone) and max(logged.values()) == 1
        # The torn last line of the first log is tolerated by check-blob-logs.
        logs = sorted(str(p) for p in log_dir.glob("*-blob-migration-*Z.txt"))
        report = tmp_path / "check.json"
        run_cli(
            "check-blob-logs", "--settings", settings_file, *logs, "--json-file", report, check=1
        )
        totals = json.loads(report.read_text())["totals"]
        assert totals["Not found"] == len(gone) and totals["Found in new db"] == 0
        no_secret(full.stdout, full.stderr, resumed.stdout, *dir_texts(log_dir))
    evidence.update(
        {
            "log dir size": "32 KiB tmpfs, then 1 MiB",
            "exit code when full": full.returncode,
            "message": message.replace(str(tmp_path), "…"),
            "checkpoint at stop (% of manifest)": round(
                100 * int(stopped_at.position or 0) / manifest.stat().st_size
            ),
            "blobs lost": 0,
            "gone keys logged once": len(gone),
        }
    )


def partial_run(
    settings: Path, log_dir: Path, *, in_status: bool = True
) -> tuple[list[str], Checkpoint]:
    """A backfill killed once its status shows checkpointed progress; the argv to resume
    it (without the rate limit that keeps the first run slow enough to be caught)."""
    args = backfill_cmd(settings, log_dir, "--chunk-size", "20")
    # ~5 s at 80 blobs/s: the status shows progress (every 2 s) well before the end.
    proc = subprocess.Popen(
        [*args, "--max-rps", "80"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        # The status shows the checkpoint's position every 2 s; the checkpoint moves sooner.
        progress = log_dir / (STATUS if in_status else CHECKPOINT)
        wait_until(
            lambda: proc.poll() is not None or (read_json(progress) or {}).get("position"),
            f"{progress.name} showing checkpointed progress",
        )
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return args[3:], valid_checkpoint(log_dir)


def garble(path: Path) -> None:
    path.write_bytes(b"\x00\xff{not json")


def truncate(path: Path) -> None:
    path.write_text(path.read_text()[: path.stat().st_size // 2])


def edit_status(path: Path) -> None:
    data = json.loads(path.read_text())
    data.update(state="finished", position="", counts={})
    path.write_text(json.dumps(data))


@pytest.mark.reliability(
    "A garbled, truncated or hand-edited status file is reported and ignored: the run "
    "resumes from the checkpoint, not from zero, and skips nothing",
    group="Faults",
)
@pytest.mark.parametrize(
    "tamper", [garble, truncate, edit_status], ids=["garbled", "truncated", "edited"]
)
def test_tampered_status_is_reported_and_resume_uses_the_checkpoint(
    tamper: Callable[[Path], None],
    settings_file,
    old_server,
    new_server,
    buckets,
    tmp_path,
    evidence,
):
    old_b, new_b = buckets
    blobs = random_blobs(400, 256)
    seed(old_server, old_b, blobs)
    log_dir = tmp_path / "logs"
    args, cp = partial_run(settings_file, log_dir, in_status=False)
    tamper(log_dir / STATUS)
    resumed = run_cli(*args, check=0)
    report = next(line for line in resumed.stdout.splitlines() if "status file" in line)
    assert "ignored and rewritten" in report
    assert f"from key after {cp.position!r}" in resumed.stdout
    assert lost(blobs, contents(new_server, new_b)) == 0
    assert read_json(log_dir / STATUS)["state"] == "finished"
    shown = report.replace(str(tmp_path), "…")
    evidence.update({"resumed after key": cp.position, "blobs lost": 0, "message": shown})


@pytest.mark.reliability(
    "A deleted checkpoint, while the status shows progress, is refused: no silent restart "
    "from zero",
    group="Faults",
)
def test_deleted_checkpoint_is_refused_not_restarted(
    settings_file, old_server, new_server, buckets, tmp_path, evidence
):
    old_b, new_b = buckets
    blobs = random_blobs(400, 256)
    seed(old_server, old_b, blobs)
    log_dir = tmp_path / "logs"
    args, cp = partial_run(settings_file, log_dir)
    assert cp.position
    (log_dir / CHECKPOINT).unlink()
    lab = Lab(settings_file, log_dir, new_server.client(), new_b)
    before = fingerprint(lab)
    refused = run_cli(*args, check=2)
    message = one_line(refused.stderr)
    assert f"checkpoint {log_dir / CHECKPOINT} is missing" in message and "--reset" in message
    assert fingerprint(lab) == before
    run_cli(*args, "--reset", check=0)
    assert lost(blobs, contents(new_server, new_b)) == 0
    shown = message.replace(str(tmp_path), "…")
    evidence.update({"exit code": refused.returncode, "message": shown, "blobs lost": 0})


# -- bad input ------------------------------------------------------------------------


@dataclass
class Lab:
    """What a bad-input case may touch, and what must stay unchanged."""

    settings: Path
    log_dir: Path
    new_client: Any  # a boto3 client of the new store
    new_bucket: str
    old_store: dict | None = None
    new_store: dict | None = None

    def write(self, new: dict, old: dict | None = None, *, name: str = "bad.py") -> Path:
        self.settings = write_settings(self.settings.with_name(name), new, old)
        return self.settings


def sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def fingerprint(lab: Lab) -> dict[str, object]:
    listing = lab.new_client.list_objects_v2(Bucket=lab.new_bucket).get("Contents", [])
    files = sorted(lab.log_dir.rglob("*")) if lab.log_dir.exists() else []
    return {
        "settings": sha(lab.settings),
        # A lock file's holder line is rewritten by whoever takes the lock: not data.
        "log dir": {str(p): "lock" if p.suffix == ".lock" else sha(p) for p in files},
        "new bucket": {o["Key"]: o["ETag"] for o in listing},
    }


def migrate(lab: Lab, *extra: object) -> list[object]:
    return ["migrate-backend", "--settings", lab.settings, "--log-dir", lab.log_dir, *extra]


def settings_text_case(text: str) -> Callable[[Lab], list[object]]:
    def build(lab: Lab) -> list[object]:
        lab.settings = lab.settings.with_name("bad.py")
        lab.settings.write_text(text)
        return migrate(lab)

    return build


def store_case(side: str, **change: object) -> Callable[[Lab], list[object]]:
    def build(lab: Lab) -> list[object]:
        assert lab.new_store is not None and lab.old_store is not None
        new, old = dict(lab.new_store), dict(lab.old_store)
        (new if side == "new" else old).update(change)
        lab.write(new, old)
        return migrate(lab)

    return build


def renamed(lab: Lab) -> list[object]:
    assert lab.new_store is not None
    new = dict(lab.new_store)
    new["bucket"] = new.pop("s3_bucket")
    lab.write(new, lab.old_store)
    return migrate(lab)


def old_missing(lab: Lab) -> list[object]:
    lab.settings = lab.settings.with_name("bad.py")
    lab.settings.write_text(f"S3_BLOB_DB_SETTINGS = {lab.new_store!r}\n")
    return migrate(lab)


def flags(*extra: object) -> Callable[[Lab], list[object]]:
    return lambda lab: migrate(lab, *extra)


def manifest_case(content: bytes | None, *, directory: bool = False) -> Callable:
    def build(lab: Lab) -> list[object]:
        path = lab.log_dir.parent / "manifest.jsonl"
        if directory:
            path.mkdir()
        elif content is not None:
            path.write_bytes(content)
        return migrate(lab, "--keys-from", path)

    return build


def log_case(content: str) -> Callable[[Lab], list[object]]:
    def build(lab: Lab) -> list[object]:
        log = lab.log_dir / "migrate_backend-blob-migration-20260101T000000Z.txt"
        log.write_text(content)
        return ["check-blob-logs", "--settings", lab.settings, log, "--migrate"]

    return build


REC = '{"blob_key": "blob/000001", "error": "x"}\n'
# name: (build the argv, exit code, what the one line must say; "{settings}", "{log_dir}",
# "{manifest}" are filled in)
BAD_INPUT: dict[str, tuple[Callable[[Lab], list[object]], int, tuple[str, ...]]] = {
    "settings file missing": (
        lambda lab: migrate(Lab(lab.settings.with_name("nope.py"), lab.log_dir, None, "")),
        2,
        ("nope.py: settings file not found", "--settings"),
    ),
    "settings file garbled": (
        settings_text_case("S3_BLOB_DB_SETTINGS = {\n"),
        2,
        ("{settings}:", "not valid Python"),
    ),
    "settings raise with a secret": (
        settings_text_case(f"S = {NEW_KEYS[1]!r}\nraise ValueError(S)\n"),
        2,
        ("{settings}: executing it failed with ValueError",),
    ),
    "wrong key name": (
        renamed,
        2,
        ("{settings}: S3_BLOB_DB_SETTINGS has unknown key 'bucket'", "did you mean 's3_bucket'"),
    ),
    "wrong value type": (
        store_case("new", list_version="1"),
        2,
        ("{settings}: S3_BLOB_DB_SETTINGS['list_version'] must be int",),
    ),
    "old store missing": (
        old_missing,
        2,
        ("{settings}: OLD_S3_BLOB_DB_SETTINGS is missing",),
    ),
    "wrong old credentials": (
        store_case("old", secret_key="wrong-" + OLD_KEYS[1]),
        3,
        ("rejected the credentials of OLD_S3_BLOB_DB_SETTINGS in {settings}", "secret_key"),
    ),
    "wrong new credentials": (
        store_case("new", access_key="NOSUCHKEY"),
        3,
        ("rejected the credentials of S3_BLOB_DB_SETTINGS in {settings}", "access_key"),
    ),
    "unreachable endpoint": (
        store_case("new", url="http://127.0.0.9:1"),
        3,
        ("cannot reach http://127.0.0.9:1", "check url of S3_BLOB_DB_SETTINGS in {settings}"),
    ),
    "bucket missing": (
        store_case("old", s3_bucket="no-such-bucket"),
        3,
        ("bucket 'no-such-bucket' does not exist", "check s3_bucket of OLD_S3_BLOB_DB_SETTINGS"),
    ),
    **{
        f"--shard {bad}": (flags("--shard", bad), 2, (f"--shard {bad!r}", "e.g. 0/2"))
        for bad in ("3/2", "x", "0/0", "-1/2")
    },
    **{
        f"{flag} {value}": (flags(flag, value), 2, (f"argument {flag}", f"{value!r} must be"))
        for flag, value in (
            ("--bwlimit", "-1"),
            ("--multipart-threshold", "-5M"),
            ("--part-size", "0"),
            ("--max-rps", "-1"),
            ("--chunk-size", "-5"),
            ("--num-workers", "0"),
        )
    },
    "--dry-run with --reset": (flags("--dry-run", "--reset"), 2, ("make no sense",)),
    "empty url": (
        store_case("new", url=""),
        2,
        ("{settings}: S3_BLOB_DB_SETTINGS['url'] must be a non-empty string",),
    ),
    "manifest missing": (manifest_case(None), 2, ("--keys-from {manifest}: no such file",)),
    "manifest is a directory": (
        manifest_case(None, directory=True),
        2,
        ("--keys-from {manifest} is a directory",),
    ),
    "manifest garbled": (
        manifest_case(b'{"blob_key": "blob/000001"}\n{"blob_key": \n'),
        2,
        ("{manifest}:2: not a JSON object", "fix or delete that line"),
    ),
    "manifest not text": (manifest_case(b"\x89PNG\r\n\xff\xfe\n"), 2, ("{manifest}: manifest is",)),
    "log line not JSON": (
        log_case(REC + "garbage in the middle\n" + REC),
        2,
        ("{log_dir}/migrate_backend-blob-migration-20260101T000000Z.txt:2: not a missing-blob",),
    ),
    "log line without blob_key": (
        log_case(REC + '{"key": "blob/000002"}\n'),
        2,
        (":2: not a missing-blob record", "--skip-malformed"),
    ),
}


@pytest.mark.reliability(
    "Bad input is refused with one line naming the file or flag and the fix; nothing changes",
    group="Bad input",
)
@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_refused_with_one_line(
    case: str, settings_file, old_server, new_server, buckets, tmp_path, evidence
):
    old_b, new_b = buckets
    old_client = old_server.client()
    for key, body in random_blobs(3, 64).items():  # what a run that went ahead would copy
        old_client.put_object(Bucket=old_b, Key=key, Body=body)
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    (log_dir / "operator-notes.txt").write_text("kept as is\n")
    lab = Lab(
        settings_file,
        log_dir,
        new_server.client(),
        new_b,
        old_store=store_dict(old_server, old_b, sigv2=True),
        new_store=store_dict(new_server, new_b, sigv2=False),
    )
    build, code, expected = BAD_INPUT[case]
    argv = build(lab)
    before = fingerprint(lab)
    proc = run_cli(*argv, check=code)
    message = one_line(proc.stderr)
    manifest = log_dir.parent / "manifest.jsonl"
    for text in expected:
        text = text.format(settings=lab.settings, log_dir=log_dir, manifest=manifest)
        assert text in message, (text, message)
    assert fingerprint(lab) == before, "a refused run changed something"
    no_secret(proc.stdout, proc.stderr, *dir_texts(log_dir))
    evidence.update({"exit code": proc.returncode, "message": message.replace(str(tmp_path), "…")})


# -- security -------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants, from /proc (what `ps` shows)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return found


def proc_texts(pid: int) -> list[str]:
    texts = []
    for p in process_tree(pid):
        for name in ("cmdline", "environ"):
            with contextlib.suppress(OSError):
                texts.append(Path(f"/proc/{p}/{name}").read_bytes().decode(errors="replace"))
    return texts


@pytest.mark.reliability(
    "No secret in ps output, environment, stdout/stderr or any file of a backfill, "
    "check-blob-logs and verify run",
    group="Security",
)
def test_no_secret_in_ps_output_or_run_files(
    settings_file, old_server, new_server, buckets, tmp_path, evidence
):
    old_b, _ = buckets
    blobs = random_blobs(150, 256)
    seed(old_server, old_b, blobs)
    manifest = tmp_path / "manifest.jsonl"
    manifest_with_gaps(manifest, blobs, 20)
    log_dir = tmp_path / "logs"
    cmd = backfill_cmd(settings_file, log_dir, "--keys-from", manifest, "--max-rps", "100")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples: list[str] = []

    def sampled_until_done() -> bool:
        # Sample the running process tree and `ps` until the backfill exits.
        samples.extend(proc_texts(proc.pid))
        ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True)
        samples.append(ps.stdout)
        return proc.poll() is not None

    wait_until(sampled_until_done, "the backfill to finish")
    out, err = proc.communicate()
    assert proc.returncode == 1  # the 20 gone keys are logged
    assert any("migrate-backend" in s for s in samples), "never saw the running backfill"
    logs = sorted(str(p) for p in log_dir.glob("*-blob-migration-*Z.txt"))
    check = run_cli(
        "check-blob-logs", "--settings", settings_file, *logs, "--json-file", log_dir / "c.json"
    )
    verify = run_cli("verify", "--settings", settings_file, "--report", log_dir / "v.json")
    outputs = [out, err, check.stdout, check.stderr, verify.stdout, verify.stderr]
    files = dir_texts(log_dir)
    no_secret(*samples, *outputs, *files)
    evidence.update(
        {
            "process samples (cmdline + environ + ps)": len(samples),
            "log dir files scanned": len(files),
            "bytes scanned": sum(len(t) for t in samples + outputs + files),
            "secrets found": 0,
        }
    )


SECRET_ERRORS = {
    "wrong credentials": store_case("old", secret_key="wrong-" + OLD_KEYS[1]),
    "unreachable endpoint": store_case("new", url="http://127.0.0.9:1"),
    "settings raise with a secret": settings_text_case(f"raise ValueError({NEW_KEYS[1]!r})\n"),
}


@pytest.mark.reliability(
    "No secret in the output or log dir of any command on an error path", group="Security"
)
@pytest.mark.parametrize("case", list(SECRET_ERRORS))
def test_no_secret_on_error_paths(
    case: str, settings_file, old_server, new_server, buckets, tmp_path, evidence
):
    old_b, new_b = buckets
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    log = log_dir / "migrate_backend-blob-migration-20260101T000000Z.txt"
    log.write_text(REC)
    lab = Lab(
        settings_file,
        log_dir,
        None,
        new_b,
        old_store=store_dict(old_server, old_b, sigv2=True),
        new_store=store_dict(new_server, new_b, sigv2=False),
    )
    argv = SECRET_ERRORS[case](lab)
    runs = [
        run_cli(*argv),
        run_cli("check-blob-logs", "--settings", lab.settings, log),
        run_cli("verify", "--settings", lab.settings, "--report", log_dir / "v.json"),
    ]
    assert all(r.returncode in (2, 3) for r in runs), [r.stderr for r in runs]
    texts = [t for r in runs for t in (r.stdout, r.stderr)] + dir_texts(log_dir)
    no_secret(*texts)
    evidence.update({"commands": len(runs), "exit codes": [r.returncode for r in runs]})
    evidence["secrets found"] = 0
