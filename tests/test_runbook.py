"""The whole runbook on the local lab (real nginx, SeaweedFS, ansible-playbook), the app
serving throughout: zero failed app requests, zero lost blobs, 8080 alone at the end.

The drill run is also the battery's secrets audit: every playbook runs with -vvv --diff,
a thread samples the command line and environment of every process the run starts, and
at the end the lab's logs, run and status files, missing-blob logs, the report and the
playbook outputs are searched for the lab's secrets.

The drill run has Ceph RGW as the new cluster (`--new-cluster ceph`): the backfill copies
SeaweedFS -> Ceph, the rollbacks' reverse passes Ceph -> SeaweedFS. The other run is the
external target over HTTPS, SeaweedFS on both sides.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from test_report_html import external_references

from blobshift.lab import runbook
from blobshift.lab.runbook import APP_DIR, LAB_DIR, PROXY, REPO, RUN_MARKER
from blobshift.s3.client import S3Client
from blobshift.settings import load_settings

LOCAL_ENV = REPO / "environments" / "local"
VAULT_PASSWORD = LOCAL_ENV / "LAB-ONLY-vault-password.txt"
# Files that hold the secrets by design: the stores' keys, the app's settings and the
# copy the rollback keeps for its second pass, the lab's vault password. They are not
# searched, but must not be readable by other users. The stores' data is not searched.
HOLD_SECRETS = {
    "credentials.json",
    "identities.json",
    "blobshift_settings.py",
    "rollback-localsettings.py",
    VAULT_PASSWORD.name,
}
NGINX_LOGS = Path("/var/log/nginx")
ASYNC_DIR = Path.home() / ".ansible_async"


def lab_secrets() -> dict[str, bytes]:
    """The secret keys of environments/local's vault, and the lab's vault password."""
    env = {**os.environ, "BLOBSHIFT_VAULT_PASSWORD_FILE": str(VAULT_PASSWORD)}
    view = subprocess.run(
        [Path(sys.executable).parent / "ansible-vault", "view", str(LOCAL_ENV / "vault.yml")],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=REPO,
    )
    found = {k: str(v).encode() for k, v in yaml.safe_load(view.stdout)["secrets"].items()}
    secrets = {k: v for k, v in found.items() if "SECRET" in k}
    secrets["vault password"] = VAULT_PASSWORD.read_text().splitlines()[0].encode()
    assert len(secrets) >= 3 and all(len(v) >= 8 for v in secrets.values())
    return secrets


def leaks(data: bytes, secrets: dict[str, bytes]) -> list[str]:
    return [name for name, value in secrets.items() if value in data]


class ProcSampler(threading.Thread):
    """Reads /proc/*/cmdline and /proc/*/environ of the run's processes until stopped:
    those started by this test process or carrying the run's marker in their environment
    (ansible and its modules, the lab's servers, the app, the backfill), and nginx."""

    def __init__(self, secrets: dict[str, bytes], marker: bytes) -> None:
        super().__init__(daemon=True)
        self.secrets, self.marker = secrets, marker
        self.halt = threading.Event()
        # (pid, start time, hash of the command line) of every process already judged: its
        # environment is fixed at exec, so it is read and searched once per command line.
        self.judged: set[tuple[int, str, int]] = set()
        # The command of each judged one that is ours, by the same key: a process seen
        # between fork and exec is recorded again under the command it execs.
        self.seen: dict[tuple[int, str, int], str] = {}
        self.sweeps = self.bytes = 0
        self.found: list[tuple[str, str, str]] = []  # (command, where, secret)
        self.error: BaseException | None = None

    def ours(self, pid: int, parents: dict[int, int], environ: bytes, cmdline: bytes) -> bool:
        if self.marker in environ or cmdline.startswith(b"nginx:"):
            return True
        while pid > 1:
            if pid == os.getpid():
                return True
            pid = parents.get(pid, 0)
        return False

    def sweep(self) -> None:
        procs: dict[int, tuple[str, bytes]] = {}
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                cmdline = (entry / "cmdline").read_bytes()
            except (OSError, IndexError):
                continue  # gone meanwhile
            parents[int(entry.name)] = int(stat[1])
            procs[int(entry.name)] = (stat[19], cmdline)
        for pid, (started, cmdline) in procs.items():
            judged = (pid, started, hash(cmdline))
            if judged in self.judged:
                continue
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue  # gone meanwhile
            self.judged.add(judged)
            if not self.ours(pid, parents, environ, cmdline):
                continue
            command = cmdline.replace(b"\0", b" ").decode(errors="replace")[:200]
            self.seen[judged] = command
            self.bytes += len(cmdline) + len(environ)
            for where, data in (("command line", cmdline), ("environment", environ)):
                self.found += [(command, where, name) for name in leaks(data, self.secrets)]
        self.sweeps += 1

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                self.sweep()
                self.halt.wait(0.1)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def stop(self) -> None:
        self.halt.set()
        self.join(30)


def files_to_search(out: Path) -> list[Path]:
    """Everything the run wrote that must not hold a secret."""
    files = [p for p in LAB_DIR.rglob("*") if p.is_file()]
    # not the stores' data (objects, their filer's database)
    files = [
        p
        for p in files
        if not (
            p.relative_to(LAB_DIR).parts[0].startswith("s3-")
            and "data" in p.relative_to(LAB_DIR).parts
        )
    ]
    files += [p for p in NGINX_LOGS.glob("blobshift_*") if p.is_file()]
    files += [p for p in out.rglob("*") if p.is_file()]
    # The backfill's Ansible async job results (named in the run's job files).
    for job in (LAB_DIR / "migration-logs").glob("*job*"):
        try:
            results = json.loads(job.read_text()).get("results_file")
        except (OSError, ValueError, AttributeError):
            continue
        if results and Path(results).is_file():
            files.append(Path(results))
    return sorted({p for p in files if p.name not in HOLD_SECRETS})


def secret_holders() -> dict[str, int]:
    """The lab's files that hold secrets by design, and their modes."""
    return {str(p): p.stat().st_mode & 0o777 for p in LAB_DIR.rglob("*") if p.name in HOLD_SECRETS}


def search_files(files: list[Path], secrets: dict[str, bytes]) -> tuple[int, list[tuple]]:
    """(bytes searched, [(file, secret name)] found)."""
    scanned, found = 0, []
    for path in files:
        data = path.read_bytes()
        scanned += len(data)
        found += [(str(path), name) for name in leaks(data, secrets)]
    return scanned, found


@pytest.mark.parametrize(
    ("target", "blobs", "extra"),
    [
        pytest.param(
            "riakcs",
            1500,
            [
                "--drill",
                "--idempotence",
                "--new-cluster",
                "ceph",
                "--ansible-flag=-vvv",
                "--ansible-flag=--diff",
            ],
            id="riakcs-ceph-with-rollbacks",
            marks=pytest.mark.reliability(
                "no lab secret in ps (command lines and environments of every process the "
                "whole runbook starts), ansible-playbook -vvv --diff output, lab and nginx "
                "logs, backfill run/status files, missing-blob logs, the report",
                group="Security",
            ),
        ),
        pytest.param("external", 300, [], id="external-https"),
    ],
)
def test_runbook_end_to_end(target, blobs, extra, tmp_path, capsys, request):
    audit = "--drill" in extra
    sampler = None
    if audit:
        evidence = request.getfixturevalue("evidence")
        secrets = lab_secrets()
        sampler = ProcSampler(secrets, f"{RUN_MARKER}={tmp_path.resolve()}".encode())
        sampler.start()
    try:
        code = runbook.main(
            [
                "--target",
                target,
                "--blobs",
                str(blobs),
                "--out",
                str(tmp_path),
                # The drill's ~15 minutes at 10 app operations a second: enough reads to
                # fall back during its backfill; the app's, nginx's and the stores' CPU
                # grow with the rate, and the other lanes share the machine.
                "--rate",
                "10" if audit else "25",
                *(["--keep"] if audit else []),
                *extra,
            ]
        )
        captured = capsys.readouterr()
        out, err = captured.out, captured.err  # a stopped runbook says why on stderr
        if sampler is not None:
            sampler.stop()
            searched = files_to_search(tmp_path)
            scanned, in_files = search_files(searched, secrets)
            holders = secret_holders()
        if "ceph" in extra and code == 0:
            ceph = ceph_after_phase5()  # the lab is kept (--keep) until the teardown below
    finally:
        if sampler is not None:
            sampler.stop()
            rb = runbook.Runbook(tmp_path / "teardown", target, blobs, 25)
            rb.prepare_env()
            rb.play("lab down", "lab.yml", "-e", "lab_state=absent")
    if sampler is not None:  # first: it holds whatever the run did
        assert code == 0 or "== phase 2" in out, err[-2000:] + out[-2000:]  # audit needs phase 2
        assert_no_secrets(evidence, sampler, searched, scanned, in_files, len(secrets))
        evidence["files holding secrets by design (not searched)"] = len(holders)
        assert {p: oct(m) for p, m in holders.items() if m & 0o007} == {}
    assert code == 0, err[-2000:] + out[-3000:]  # a stopped run writes no report
    report = json.loads((tmp_path / "report.json").read_text())
    assert_runbook_passed(report, code, out, blobs, tmp_path)
    if "ceph" in extra:
        assert report["new_cluster"] == "ceph"
        nodes, served_by, final_url, listed = ceph
        assert sorted(nodes) == [("127.0.0.3", 9100), ("127.0.0.5", 9120)]
        assert served_by == dict.fromkeys(nodes, "radosgw")
        assert final_url == f"http://{PROXY[0]}:{PROXY[1]}"
        assert listed == [CEPH_KEPT_KEY]


# SeaweedFS folds "a//b" into "a/b": listed as written only where Ceph serves.
CEPH_KEPT_KEY = ".blobshift-e2e-ceph/a//b"


def ceph_after_phase5() -> tuple[list[tuple[str, int]], dict, str, list[str]]:
    """After phase 5 the proxy's main port is the new cluster alone, each node a radosgw;
    (its nodes, who listens on each, the app's final store url, and what that store lists
    of CEPH_KEPT_KEY written through it)."""
    nodes = upstream_of(PROXY)
    served_by = {node: listener_name(node) for node in nodes}
    final = load_settings(APP_DIR / "localsettings.py").new
    listed = asyncio.run(round_trip_through(final, CEPH_KEPT_KEY, b"kept as written"))
    return nodes, served_by, final.url, listed


def assert_runbook_passed(report: dict, code: int, out: str, blobs: int, tmp_path: Path) -> None:
    assert code == 0, out[-3000:]
    assert report["blobs_in_old_at_start"] == blobs
    assert report.get("lab_idempotent", True) is True
    assert report["app"]["failed"] == 0, report["app"]["failures"]
    phases = report["app"]["phases"]
    assert {"phase1", "phase2", "phase4", "after"} <= set(phases)
    assert all(phases[p]["requests"] > 0 for p in ("phase1", "phase2", "phase4"))
    assert report["audit"]["missing_in_new_store"] == 0
    assert report["audit"]["missing_through_app_settings"] == 0
    assert report["audit"]["expected"] > blobs  # the app wrote blobs of its own throughout
    assert report["audit"]["app_settings_old_store"] is False
    assert report["verify"]["clean"] is True
    # Only the main port is left, and the audit through the app's settings (proxy:8080 for
    # the Riak CS target) found every blob: it reaches the new store.
    assert report["proxy"] == {"8080_listening": True, "8081_listening": False}
    assert out.rstrip().splitlines()[-1] == f"report: {tmp_path / 'report.json'}"
    # The page beside it: named on the line before, self-contained, the run's figures on it.
    page = tmp_path / "report.html"
    assert out.rstrip().splitlines()[-2] == f"report page: {page}"
    text = page.read_text()
    assert external_references(text) == []
    assert 'id="verify-verdict"><span class="tag ok">clean<' in text
    assert f">{report['blobs_in_old_at_start']:,}<" in text
    # The backfill listed by a range plan made for this migration (phase 1 put the last
    # run's aside): made after this run started, kept on the controller.
    plan = report["backfill"]["range_plan"]
    assert plan["ranges"] >= 2 and plan["created"] >= report["started"]
    assert Path(plan["file"]).is_file()
    assert report["backfill_samples"]  # the progress sampled during phase 2
    assert report["backfill_samples"][-1]["copied"] == report["backfill"]["totals"]["copied"]
    # Readiness from the proxy's store log: red over the backfill (the app's reads of blobs
    # not yet copied were answered by the old store), green before the flip.
    during = report["readiness_during_backfill"]
    assert during["verdict"] == "fallbacks" and during["fallbacks"] > 0, during
    assert during["own_reads"] > 0  # the backfill's reads, told apart by their User-Agent
    before = report["readiness_before_flip"]
    assert before["fallbacks"] == 0, before
    assert before["verdict"] == ("ready" if before["app_reads"] else "no_app_reads")
    assert "Flip readiness" in text


def assert_no_secrets(
    evidence, sampler: ProcSampler, files: list[Path], scanned: int, in_files: list, n: int
) -> None:
    assert sampler.error is None, sampler.error
    commands = set(sampler.seen.values())
    kinds = {
        "ansible": any("ansible" in c for c in commands),
        "weed": any("weed mini" in c for c in commands) and any("weed s3" in c for c in commands),
        "app": any("blobshift.lab.app" in c for c in commands),
        "backfill": any("blob_migration" in c for c in commands),
        "nginx": any(c.startswith("nginx:") for c in commands),
    }
    vvv_logs = [p for p in files if p.parent.name == "ansible" and p.suffix == ".log"]
    evidence["secrets looked for"] = n
    evidence["/proc sweeps"] = sampler.sweeps
    evidence["processes sampled"] = len(sampler.seen)
    evidence["/proc bytes searched"] = sampler.bytes
    evidence["files searched"] = len(files)
    evidence["file bytes searched"] = scanned
    evidence["ansible -vvv --diff outputs"] = len(vvv_logs)
    evidence["secrets found"] = len(sampler.found) + len(in_files)
    assert all(kinds.values()), kinds  # the sampler saw every kind of process
    assert any("phase2" in p.name for p in vvv_logs)
    assert sampler.found == [], sampler.found[:10]
    assert in_files == [], in_files[:10]


def upstream_of(listen: tuple[str, int]) -> list[tuple[str, int]]:
    """The nodes of the nginx site that listens on `listen` (its upstream's servers)."""
    for site in Path("/etc/nginx/sites-enabled").glob("blobshift_*"):
        text = site.read_text()
        if f"listen {listen[0]}:{listen[1]};" in text:
            upstream = text.split("upstream ", 1)[1].split("}", 1)[0]
            return [(ip, int(port)) for ip, port in re.findall(r"server ([\d.]+):(\d+);", upstream)]
    raise AssertionError(f"no nginx site listens on {listen}")


def listener_name(node: tuple[str, int]) -> str:
    """The name of the process listening on `node` (ss -p: root sees every process)."""
    out = subprocess.run(
        ["ss", "-Hltnp", "src", f"{node[0]}:{node[1]}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = re.findall(r'users:\(\("([^"]+)"', out)
    return names[0] if len(names) == 1 else f"not one listener: {out!r}"


async def round_trip_through(store, key: str, body: bytes) -> list[str]:
    """Write `key`, then list its prefix (what the store says it holds); `key` deleted again."""
    client = S3Client(store)
    try:
        await client.put(key, body, {})
        try:
            prefix = key.split("/", 1)[0] + "/"
            return [o.key async for o in client.iter_objects(prefix)]
        finally:
            await client.delete(key)
    finally:
        client.close()


def test_sampler_records_the_command_a_process_execs_after_it_was_first_seen(tmp_path):
    """A child seen between fork and exec (a lab node started by Popen) is recorded under the
    command it then runs, not only the one it was forked with."""
    marker = "BLOBSHIFT_SAMPLER_TEST=1"
    ready = tmp_path / "sampled"
    script = (
        "import os, pathlib, sys, time\n"
        "flag = pathlib.Path(sys.argv[1])\n"
        "deadline = time.monotonic() + 30\n"
        "while not flag.exists() and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "os.execv('/bin/sleep', ['sleep', '30'])\n"
    )
    name, _, value = marker.partition("=")
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(ready)], env={**os.environ, name: value}
    )
    try:
        sampler = ProcSampler({"none": b"not-a-secret-of-this-test"}, marker.encode())
        sampler.sweep()  # the child before its exec
        assert any(sys.executable in c and "-c" in c for c in sampler.seen.values())
        ready.touch()
        runbook.wait_until(
            lambda: Path(f"/proc/{child.pid}/cmdline").read_bytes() == b"sleep\x0030\x00",
            10,
            "the child's exec",
        )
        sampler.sweep()
        assert "sleep 30" in {c.strip() for c in sampler.seen.values()}
    finally:
        child.kill()
        child.wait()
