"""`--metrics-file`: the run's counts in Prometheus' text format, replaced atomically,
equal to the run's own (status file, report), read by a real node_exporter and Prometheus."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import BASE_PORT, store_dict, write_settings
from helpers import backfill_cmd, contents, random_blobs, read_json, run_cli, seed, wait_until
from prometheus_client.parser import text_string_to_metric_families

from blobshift.lab.faultproxy import FaultProxy

HOST = socket.gethostname()
# Families every write holds; the last one written is the state, so a file cut short
# would lack it.
FAMILIES = {
    "blobshift_objects_listed",
    "blobshift_objects_copied",
    "blobshift_objects_skipped",
    "blobshift_objects_logged",
    "blobshift_bytes_copied",
    "blobshift_retries",
    "blobshift_request_duration_seconds",
    "blobshift_run_state",
}
# Prometheus and node_exporter of the last test, on their own address (BASE_PORT + 80..).
PROM_IP = "127.0.0.6"


def parse(text: str) -> dict[str, list]:
    """family name -> its samples; raises on anything that is not the text format."""
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(families: dict[str, list], sample: str, **labels: str) -> float:
    found = [
        s.value
        for samples in families.values()
        for s in samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (sample, labels, found)
    return found[0]


def state_of(families: dict[str, list]) -> str:
    (current,) = [s.labels["state"] for s in families["blobshift_run_state"] if s.value == 1]
    return current


def test_backfill_metrics_equal_its_counts_and_every_read_parses(
    old_server, new_server, buckets, settings_file, tmp_path
):
    old_b, new_b = buckets
    blobs = random_blobs(300, 2000)
    seed(old_server, old_b, blobs)
    present = dict(list(blobs.items())[:40])
    seed(new_server, new_b, present)
    metrics = tmp_path / "prom" / "blobshift_migrate_backend_shard0of1.prom"
    metrics.parent.mkdir()
    log_dir = tmp_path / "logs"
    cmd = backfill_cmd(settings_file, log_dir, "--metrics-file", metrics)
    cmd += ["--metrics-interval", "0.05", "--max-rps", "150", "--num-workers", "4"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Read the file as fast as possible while the run rewrites it every 50 ms: each read
    # is a whole file (the run replaces it by a rename, never writes it in place).
    reads, states, copied_seen = 0, set(), set()
    while proc.poll() is None:
        try:
            text = metrics.read_text()
        except FileNotFoundError:
            continue
        families = parse(text)
        assert families.keys() >= FAMILIES, (reads, sorted(families))
        states.add(state_of(families))
        copied_seen.add(value(families, "blobshift_objects_copied_total"))
        reads += 1
    out, err = proc.communicate()
    assert proc.returncode == 0, (out, err)
    assert reads > 20 and len(copied_seen) > 5, (reads, copied_seen)
    assert "running" in states
    # Nothing but the file itself is left in the directory (no temp file).
    assert [p.name for p in metrics.parent.iterdir()] == [metrics.name]
    families = parse(metrics.read_text())
    counts = read_json(log_dir / "migrate_backend-status.json")["counts"]
    assert counts["copied"] == len(blobs) - len(present) and counts["skipped"] == len(present)
    labels = {"shard": "0/1", "host": HOST, "command": "migrate-backend"}
    for name, key in [
        ("blobshift_objects_listed_total", "listed"),
        ("blobshift_objects_copied_total", "copied"),
        ("blobshift_objects_skipped_total", "skipped"),
        ("blobshift_objects_logged_total", "logged"),
        ("blobshift_bytes_copied_total", "bytes"),
    ]:
        assert value(families, name, **labels) == counts[key], name
    assert state_of(families) == "finished"
    age = value(families, "blobshift_checkpoint_age_seconds", **labels)
    assert 0 <= age < 60
    # Every PUT to the new store and HEAD/LIST is timed, per store.
    puts = value(families, "blobshift_request_duration_seconds_count", store="new", operation="PUT")
    assert puts >= counts["copied"]
    assert value(families, "blobshift_request_duration_seconds_count", store="old", operation="GET")
    assert value(
        families, "blobshift_request_duration_seconds_count", store="old", operation="LIST"
    )
    assert "secret" not in metrics.read_text()


@pytest.fixture
def faulty_new(new_server):
    proxy = FaultProxy(("127.0.0.4", 0), (new_server.ip, new_server.s3_port), seed=3).start()
    yield proxy
    proxy.stop()


def test_retries_by_cause(old_server, new_server, buckets, faulty_new, tmp_path):
    old_b, new_b = buckets
    blobs = random_blobs(150, 1500)
    seed(old_server, old_b, blobs)
    faulty_new.configure(slowdown=0.25, error=0.1)
    settings = write_settings(
        tmp_path / "localsettings.py",
        new=store_dict(new_server, new_b, sigv2=False) | {"url": faulty_new.url},
        old=store_dict(old_server, old_b, sigv2=True),
    )
    metrics = tmp_path / "m.prom"
    run_cli(
        "migrate-backend", "--settings", settings, "--log-dir", tmp_path / "logs",
        "--metrics-file", metrics, "--num-workers", "6", check=0,
    )  # fmt: skip
    families = parse(metrics.read_text())
    counts = read_json(tmp_path / "logs" / "migrate_backend-status.json")["counts"]
    by_cause = {
        s.labels["cause"]: s.value
        for s in families["blobshift_retries"]
        if s.name == "blobshift_retries_total"
    }
    injected = faulty_new.counters()
    assert by_cause.get("SlowDown", 0) > 0 and by_cause.get("InternalError", 0) > 0, by_cause
    # Each made-up answer is retried at most once (the preflight's own retries are not
    # the run's), and the run ended with nothing logged.
    assert by_cause["SlowDown"] + by_cause["InternalError"] <= (
        injected["slowdown"] + injected["error"]
    )
    assert sum(by_cause.values()) == counts["retries"]
    assert value(families, "blobshift_objects_copied_total") == len(blobs) == counts["copied"]


def test_verify_and_check_blob_logs_metrics(
    old_server, new_server, buckets, settings_file, tmp_path
):
    old_b, new_b = buckets
    blobs = random_blobs(60, 1000)
    seed(old_server, old_b, blobs)
    log_dir = tmp_path / "logs"
    run_cli("migrate-backend", "--settings", settings_file, "--log-dir", log_dir, check=0)
    new_server.client().delete_object(Bucket=new_b, Key="blob/000007")
    prom = tmp_path / "verify.prom"
    report = tmp_path / "verify.json"
    run_cli(
        "verify", "--settings", settings_file, "--report", report, "--metrics-file", prom,
        check=1,
    )  # fmt: skip
    families = parse(prom.read_text())
    rep = json.loads(report.read_text())
    labels = {"shard": "all", "host": HOST, "command": "verify"}
    assert value(families, "blobshift_objects_listed_total", **labels) == rep["old_objects"] == 60
    assert value(families, "blobshift_objects_checked_total", result="missing") == 1
    assert value(families, "blobshift_objects_checked_total", result="matched") == rep["matched"]
    assert state_of(families) == "finished"

    log = tmp_path / "missing.txt"
    log.write_text('{"blob_key": "blob/000007"}\n{"blob_key": "never/existed"}\n')
    prom = tmp_path / "check.prom"
    run_cli(
        "check-blob-logs", "--settings", settings_file, log, "--migrate",
        "--metrics-file", prom, check=1,
    )  # fmt: skip
    families = parse(prom.read_text())
    labels = {"shard": "all", "host": HOST, "command": "check-blob-logs"}
    # Two records: one found in old and migrated now, one found nowhere.
    assert value(families, "blobshift_objects_listed_total", **labels) == 2
    assert value(families, "blobshift_objects_copied_total", **labels) == 1
    assert "blob/000007" in contents(new_server, new_b)
    assert value(families, "blobshift_objects_checked_total", result="found_in_old_db") == 1
    assert value(families, "blobshift_objects_checked_total", result="not_found") == 1


def test_bad_metrics_file_is_refused_before_the_run(settings_file, tmp_path):
    proc = run_cli(
        "migrate-backend", "--settings", settings_file, "--log-dir", tmp_path / "logs",
        "--metrics-file", tmp_path / "no-such-dir" / "m.prom", check=2,
    )  # fmt: skip
    assert "no-such-dir does not exist" in proc.stderr
    assert not (tmp_path / "logs").exists()
    proc = run_cli(
        "verify", "--settings", settings_file, "--metrics-file", tmp_path / "m.txt", check=2
    )
    assert "must end in .prom" in proc.stderr


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def _start(argv: list[str], log: Path) -> subprocess.Popen:
    fh = open(log, "wb")  # noqa: SIM115 - the process's output, kept for the assertion
    return subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT)


@pytest.mark.skipif(
    not (shutil.which("prometheus") and shutil.which("prometheus-node-exporter")),
    reason="needs Debian's prometheus and prometheus-node-exporter (make deps)",
)
def test_prometheus_scrapes_the_metrics_file_through_node_exporter(
    old_server, buckets, settings_file, tmp_path
):
    """The chain of production: the run's file in node_exporter's textfile directory,
    node_exporter scraped by Prometheus, the copied count queried from Prometheus."""
    old_b, _ = buckets
    seed(old_server, old_b, random_blobs(80, 500))
    textfile_dir = tmp_path / "node-exporter"
    textfile_dir.mkdir()
    metrics = textfile_dir / "blobshift_migrate_backend_shard0of1.prom"
    run_cli(
        "migrate-backend", "--settings", settings_file, "--log-dir", tmp_path / "logs",
        "--metrics-file", metrics, check=0,
    )  # fmt: skip
    copied = read_json(tmp_path / "logs" / "migrate_backend-status.json")["counts"]["copied"]
    assert copied == 80
    exporter_at = f"{PROM_IP}:{BASE_PORT + 81}"
    prom_at = f"{PROM_IP}:{BASE_PORT + 80}"
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: node\n    static_configs: [{{targets: ['{exporter_at}']}}]\n"
    )
    procs = [
        _start(
            [
                "prometheus-node-exporter",
                f"--web.listen-address={exporter_at}",
                "--collector.disable-defaults",
                "--collector.textfile",
                f"--collector.textfile.directory={textfile_dir}",
            ],
            tmp_path / "node-exporter.log",
        ),
        _start(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address={prom_at}",
            ],
            tmp_path / "prometheus.log",
        ),
    ]
    try:
        # node_exporter refuses a file it cannot parse (node_textfile_scrape_error 1).
        wait_until(lambda: _get(f"http://{exporter_at}/metrics"), "node_exporter", timeout=15)
        exported = _get(f"http://{exporter_at}/metrics").decode()
        assert "node_textfile_scrape_error 0" in exported, exported[-2000:]
        wait_until(lambda: _get(f"http://{prom_at}/-/ready"), "Prometheus ready", timeout=20)
        query = urllib.parse.urlencode({"query": "blobshift_objects_copied_total"})
        found: list = []

        def series() -> list:
            answer = _get(f"http://{prom_at}/api/v1/query?{query}")
            found[:] = json.loads(answer)["data"]["result"] if answer else []
            return found

        wait_until(series, "blobshift_objects_copied_total in Prometheus", timeout=20)
        (series,) = found
        assert float(series["value"][1]) == copied
        assert series["metric"]["command"] == "migrate-backend"
        assert series["metric"]["shard"] == "0/1" and series["metric"]["host"] == HOST
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_a_run_without_a_metrics_file_does_not_import_prometheus_client() -> None:
    """Its import took ~0.02 s of every start; only a run that writes the file needs it."""
    probe = "import sys, blobshift.cli; print('prometheus_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
