"""Readiness from live traffic: the proxy's store log says whether app reads still need
the old store.

The parser on recorded lines (tests/recorded/nginx/), and the whole path for real: the
nginx_proxy role (run by ansible-playbook) renders the two sites in front of two real
SeaweedFS servers on an nginx of its own, the app's MigratingBlobDB reads through it,
the real backfill runs through it, and `blobshift readiness` judges the real log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import store_dict, write_settings
from helpers import random_blobs, run_cli, seed

from blobshift.blobdb import get_blob_db
from blobshift.readiness import (
    VERDICT_FALLBACKS,
    VERDICT_NO_READS,
    VERDICT_READY,
    ReadinessError,
    judge,
    parse_line,
    parse_window,
)
from blobshift.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
RECORDED = Path(__file__).parent / "recorded" / "nginx"
sys.path.insert(0, str(Path(__file__).parent / "ansible"))
import ansible_lab  # noqa: E402 - the tests' own nginx.conf, from the Ansible tests

BASE_PORT = int(os.environ.get("BLOBSHIFT_TEST_PORT", "19200"))
MAIN_PORT, TEMP_PORT = BASE_PORT + 50, BASE_PORT + 51
VENV_BIN = Path(sys.executable).parent
# The recorded log's lines span 1700000000.0 .. 1700000100.0 (msec).
RECORDED_END = 1700000100.0


# -- the parser, on recorded lines --------------------------------------------------------


def recorded(name: str) -> Path:
    return RECORDED / name


def test_recorded_migrating_log_counts_fallbacks_and_excludes_the_engine():
    r = judge([recorded("store-migrating.log")], 200, now=RECORDED_END)
    assert r.verdict == VERDICT_FALLBACKS
    # Two app GETs and one app HEAD answered by the old site; its 404s are no fallbacks.
    assert r.fallbacks == 3
    assert r.fallback_examples == ["blobdb/form/1/a.bin", "blobdb/form/2/b b.bin"]
    assert r.app_reads_by_site == {"riakcs": 4, "riakcs_new": 6}
    # The backfill's and verify's reads of the old store are not the app's.
    assert r.own_reads == 3
    assert r.own_agents == {"blobshift/0.1.0": 3}
    assert r.malformed == 1
    assert r.malformed_examples[0].startswith(str(recorded("store-migrating.log")) + "@")


def test_recorded_window_excludes_older_lines():
    # Only the last 30 s: the fallbacks happened before, the new store answered since.
    r = judge([recorded("store-migrating.log")], 30, now=RECORDED_END)
    assert r.verdict == VERDICT_READY
    assert r.fallbacks == 0
    assert r.app_reads == 2


def test_recorded_only_engine_reads_cannot_judge():
    r = judge([recorded("store-engine-only.log")], 200, now=RECORDED_END)
    assert r.verdict == VERDICT_NO_READS
    assert r.app_reads == 0 and r.own_reads == 2


def test_recorded_puts_listings_and_deletes_are_no_reads():
    lines = recorded("store-migrating.log").read_text().splitlines()
    reqs = [req for line in lines if (req := parse_line(line))]
    kinds = {(r.method, r.is_read) for r in reqs}
    assert ("PUT", False) in kinds and ("DELETE", False) in kinds
    listing = [r for r in reqs if r.method == "GET" and r.uri == "/blobdb/"]
    assert listing and not listing[0].is_read


@pytest.mark.parametrize(
    "text,seconds", [("15m", 900), ("900", 900), ("90s", 90), ("1h", 3600), ("2.5s", 2.5)]
)
def test_window(text, seconds):
    assert parse_window(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5m", "15 minutes", "m"])
def test_bad_window(text):
    with pytest.raises(ReadinessError, match="positive duration"):
        parse_window(text)


def test_garbage_and_missing_logs(tmp_path):
    garbage = tmp_path / "garbage.log"
    garbage.write_bytes(b"\xff\xfe not json\n[1, 2]\n{}\n" + b'{"msec": "x"}\n')
    r = judge([garbage], 60, now=1.0)
    assert r.malformed == 4 and r.verdict == VERDICT_NO_READS
    with pytest.raises(ReadinessError, match="no such file"):
        judge([tmp_path / "absent.log"], 60)
    with pytest.raises(ReadinessError, match="is a directory"):
        judge([tmp_path], 60)


def test_large_log_reads_only_its_tail(tmp_path):
    """Many days of log: the window is found from the end, older blocks are not parsed."""
    log = tmp_path / "big.log"
    line = (
        '{"msec":"%.3f","site":"riakcs","method":"GET","uri":"/blobdb/old","status":"200",'
        '"agent":"Boto3/1.0"}\n'
    )
    with log.open("w") as f:
        for i in range(60000):  # 4 MiB of fallbacks, long before the window
            f.write(line % (1000.0 + i * 0.01))
        f.write(line.replace("riakcs", "riakcs_new") % 100000.0)
    r = judge([log], 60, now=100010.0)
    assert r.verdict == VERDICT_READY and r.app_reads == 1
    assert r.lines < 20000  # the blocks read back, not the 60001 lines


def test_a_head_the_delete_of_the_same_key_follows_is_no_read(tmp_path):
    log = tmp_path / "store.log"
    line = '{"msec":"%.3f","site":"%s","method":"%s","uri":"/b/%s","status":"%d","agent":"app"}\n'
    log.write_text(
        "".join(
            line % args
            for args in (
                (100.0, "riakcs", "HEAD", "deleted", 200),  # the delete's own HEAD
                (100.1, "riakcs", "DELETE", "deleted", 204),
                (101.0, "riakcs", "HEAD", "asked", 200),  # exists(): a fallback
                (102.0, "riakcs", "HEAD", "late-delete", 200),  # deleted much later:
                (120.0, "riakcs", "DELETE", "late-delete", 204),  # a read before that
                (104.0, "riakcs", "HEAD", "skewed", 200),  # another worker's clock:
                (103.9, "riakcs", "DELETE", "skewed", 204),  # logged after, stamped before
                (103.0, "riakcs_new", "HEAD", "deleted-new", 200),  # the new store's
                (103.1, "riakcs", "DELETE", "deleted-new", 204),
            )
        )
    )
    r = judge([log], 60, now=125.0)
    assert r.fallbacks == 2 and sorted(r.fallback_examples) == ["b/asked", "b/late-delete"]
    assert r.app_reads == 5
    # A HEAD at the window's end whose DELETE comes after it is still that delete's.
    edge = judge([log], 1, now=100.05)
    assert edge.fallbacks == 0 and edge.app_reads == 1


def test_cli_exit_codes(tmp_path):
    log = str(recorded("store-migrating.log"))
    # Judged at the current time, the recorded lines are long past: no reads in the window.
    proc = run_cli("readiness", "--log", log, "--window", "15m")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "no app reads in window: cannot judge" in proc.stdout
    proc = run_cli("readiness", "--log", str(tmp_path / "absent.log"))
    assert proc.returncode == 2 and "no such file" in proc.stderr
    proc = run_cli("readiness", "--log", log, "--window", "soon")
    assert proc.returncode == 2 and "positive duration" in proc.stderr


# -- the real proxy ---------------------------------------------------------------------


def deploy_proxy(root: Path, old_port: int, new_port: int) -> Path:
    """The nginx_proxy role, by ansible-playbook, on an nginx of its own; its store log."""
    conf = ansible_lab.nginx_conf(root)
    ngx = conf.parent
    store_log = ngx / "logs" / "blobshift_store.log"
    variables = {
        "nginx_proxy_manage_package": False,
        "nginx_proxy_conf_dir": str(ngx),
        "nginx_proxy_log_dir": str(ngx / "logs"),
        "nginx_proxy_pid_file": str(ngx / "nginx.pid"),
        "nginx_proxy_store_log": str(store_log),
        "nginx_proxy_sites": [
            {
                "name": "riakcs",
                "port": MAIN_PORT,
                "nodes": [{"address": "127.0.0.2", "port": old_port}],
            },
            {
                "name": "riakcs_new",
                "port": TEMP_PORT,
                "nodes": [{"address": "127.0.0.3", "port": new_port}],
            },
        ],
    }
    (root / "vars.json").write_text(json.dumps(variables))
    playbook = root / "proxy.yml"
    playbook.write_text(
        "- name: Proxy\n  hosts: localhost\n  gather_facts: false\n  roles: [{role: nginx_proxy}]\n"
    )
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        "ANSIBLE_NOCOLOR": "1",
        "BLOBSHIFT_VAULT_PASSWORD_FILE": str(
            REPO / "environments/local/LAB-ONLY-vault-password.txt"
        ),
    }
    env.pop("ANSIBLE_CONFIG", None)
    proc = subprocess.run(
        [
            VENV_BIN / "ansible-playbook",
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            "-e",
            f"@{root / 'vars.json'}",
            str(playbook),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return store_log


@pytest.fixture
def proxy(tmp_path, old_server, new_server):
    root = tmp_path / "proxy"
    store_log = deploy_proxy(root, old_server.s3_port, new_server.s3_port)
    yield store_log
    ansible_lab.stop(root)  # nginx only: this lab root has no S3 servers of its own


def via_proxy(store: dict, port: int) -> dict:
    return {**store, "url": f"http://127.0.0.1:{port}"}


def logged(log: Path, quiet: float = 0.3, timeout: float = 10.0) -> float:
    """Wait until nginx has written the lines of the requests just answered (it logs a
    request after sending its response: a loaded machine can read the log before), i.e.
    the log stops growing for `quiet` seconds; the time then, for the window's end."""
    deadline = time.monotonic() + timeout
    size, since = log.stat().st_size, time.monotonic()
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, f"{log} still growing after {timeout}s"
        time.sleep(0.05)
        if (now := log.stat().st_size) != size:
            size, since = now, time.monotonic()
    return time.time()


def test_readiness_red_before_the_backfill_green_after(
    tmp_path, proxy, old_server, new_server, buckets
):
    old_bucket, new_bucket = buckets
    blobs = random_blobs(40, size=512, prefix="form/")
    seed(old_server, old_bucket, blobs)
    settings = write_settings(
        tmp_path / "localsettings.py",
        new=via_proxy(store_dict(new_server, new_bucket, sigv2=False), TEMP_PORT),
        old=via_proxy(store_dict(old_server, old_bucket, sigv2=True), MAIN_PORT),
    )
    app = get_blob_db(load_settings(settings))
    app.put("app/new-1", b"written while migrating")

    # Before the backfill: every old blob the app reads falls back to the old store.
    started = time.time()
    for key in list(blobs)[:10]:
        assert app.get(key) == blobs[key]
    assert app.get("app/new-1") == b"written while migrating"
    now = logged(proxy)
    red = judge([proxy], now - started, now=now)
    assert red.verdict == VERDICT_FALLBACKS
    assert red.fallbacks == 10
    assert red.app_reads_by_site == {"riakcs": 10, "riakcs_new": 11}
    assert set(red.fallback_examples) <= {f"{old_bucket}/{k}" for k in list(blobs)[:10]}
    proc = run_cli("readiness", "--log", proxy, "--window", f"{now - started}s", "--now", now)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"fallback examples: {old_bucket}/form/" in proc.stdout

    # The backfill reads every old blob through the proxy's main site, as the engine.
    run_cli("migrate-backend", "--settings", settings, "--log-dir", tmp_path / "logs", check=0)
    backfill_done = time.time()
    whole = judge([proxy], time.time() - started + 1)
    assert whole.own_reads >= len(blobs)
    assert set(whole.own_agents) == {"blobshift/0.1.0"}
    assert whole.fallbacks == 10  # the backfill's reads are not counted as the app's

    # After it: the same reads are answered by the new store alone.
    for key in blobs:
        assert app.get(key) == blobs[key]
    now = logged(proxy)
    window = f"{now - backfill_done}s"
    proc = run_cli("readiness", "--log", proxy, "--window", window, "--now", now, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    green = json.loads(proc.stdout)
    assert green["verdict"] == VERDICT_READY
    assert green["fallbacks"] == 0 and green["own_reads"] == 0
    assert green["app_reads_by_site"] == {"riakcs_new": len(blobs)}

    # The app deletes blobs: its delete asks each store whether the blob exists (a HEAD
    # the old store answers, since the backfill copied and kept it) before the DELETE.
    # That is no read of the old store: still green.
    for key in list(blobs)[:5]:
        assert app.delete(key) is True
    # nginx logs a request after its answer: wait for the last DELETE's line (an undecided
    # HEAD at the log's end counts as a read, failing closed).
    last = f'"site":"riakcs", "method":"DELETE","uri":"/{old_bucket}/{list(blobs)[4]}"'
    deadline = time.monotonic() + 10
    while last not in Path(proxy).read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    now = time.time()
    after_deletes = judge([proxy], now - backfill_done, now=now)
    assert after_deletes.verdict == VERDICT_READY and after_deletes.fallbacks == 0
    assert after_deletes.app_reads == len(blobs) + 10  # the deletes' HEADs, one per store

    # A blob only the old store still has (written there after the backfill) turns it red,
    # whether the app reads it (GET) or asks for it (HEAD, no DELETE after it).
    seed(old_server, old_bucket, {"form/late.bin": b"late", "form/late-head.bin": b"h"})
    assert app.get("form/late.bin") == b"late"
    assert app.exists("form/late-head.bin")
    now = time.time()
    window = f"{now - backfill_done}s"
    proc = run_cli("readiness", "--log", proxy, "--window", window, "--now", now, "--json")
    assert proc.returncode == 1
    late = json.loads(proc.stdout)
    assert late["fallbacks"] == 2, late
    assert {f"{old_bucket}/form/late.bin", f"{old_bucket}/form/late-head.bin"} <= set(
        late["fallback_examples"]
    )


def test_the_store_log_keeps_the_sites_access_logs(proxy):
    """The store log comes on top of each site's access log, which keeps working."""
    logs = proxy.parent
    subprocess.run(
        ["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{MAIN_PORT}/"], check=True, timeout=30
    )
    assert (logs / "blobshift_riakcs-access.log").read_text().strip()
    last = parse_line(proxy.read_text().splitlines()[-1])
    assert last is not None and last.site == "riakcs" and last.agent.startswith("curl/")
