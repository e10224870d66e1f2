"""The backfill as a systemd unit on the fleet's django_manage hosts (manage1, manage2).

run_blob_migration.yml over SSH as deploy: on these hosts (systemd as init) each shard runs
as a transient unit of its own, started by root, the engine in it run by blobapp. Two real
SeaweedFS servers on the controller's fleet address (10.89.7.1) are the stores; each test
seeds its own buckets and writes its own settings file and log dir on the hosts, with an
inventory of its own that reuses the fleet's hosts and connection. Cases: (1) the units
run as blobapp and copy every blob, and an engine killed with SIGKILL inside its unit is
restarted by systemd and resumes from its checkpoint; (2) the controller's ansible-playbook
killed mid-pass leaves the unit running, and a re-run re-attaches to it (same process).
About 2 minutes in all (the engine's install on the hosts ~20 s, each case ~50 s).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fleetlib import ADDRESSES, BIN, REPO, env, on, run, wait_for

from blobshift.lab.fleet import GATEWAY, Fleet
from blobshift.lab.seaweed import SeaweedServer, running, settings_text

sys.path.insert(0, str(REPO / "tests"))
from helpers import contents, md5s, random_blobs, seed

BASE_PORT = int(os.environ.get("BLOBSHIFT_TEST_PORT", "27100"))
OLD_KEYS = ("H2UNITOLDKEY", "h2-unit-old-secret-never-logged-3f1a")
NEW_KEYS = ("H2UNITNEWKEY", "h2-unit-new-secret-never-logged-9c07")
HOSTS = ("manage1", "manage2")
# Each test's own tree on the hosts (settings, log dir); its units' own prefix, so that
# nothing here meets the fleet runbook's units (blobshift-...).
HOST_ROOT = "/var/lib/blobshift-unit-test"
PREFIX = "blobshift-unittest"
UNITS = {
    "manage1": f"{PREFIX}-migrate_backend-shard0of2.service",
    "manage2": f"{PREFIX}-migrate_backend-shard1of2.service",
}
SHOW = "Id,ActiveState,SubState,MainPID,NRestarts,InvocationID,User,Result"
BLOBAPP_UID = "999"  # in the fleet's image


@pytest.fixture(scope="module")
def stores(fleet: Fleet) -> Iterator[tuple[SeaweedServer, SeaweedServer]]:
    """The old and the new store, on the controller's fleet address (the hosts reach it);
    and this checkout's engine on the hosts (roles/blobshift_engine, wheels shipped), so
    that the playbook's own install step changes nothing and each test's timing is its own."""
    run("ansible-playbook", str(REPO / "tests" / "modules" / "install_engine.yml"))
    root = Path(tempfile.mkdtemp(prefix="blobshift-fleet-unit-"))
    old = SeaweedServer(GATEWAY, BASE_PORT, root / "old", *OLD_KEYS)
    new = SeaweedServer(GATEWAY, BASE_PORT + 20, root / "new", *NEW_KEYS)
    with running(old, new):
        yield old, new
    shutil.rmtree(root, ignore_errors=True)


def on_hosts(command: str, hosts: str = "manage1:manage2", become: bool = False) -> dict:
    """A shell command's stdout on the hosts (the django_manage ones unless told), by host."""
    return on(hosts, command, become)


def units() -> dict[str, dict[str, str]]:
    """`systemctl show` of each host's unit, as deploy (reading needs no root), and Owner:
    the user of its main process ("" when it has none)."""
    unit = f"{{{{ {UNITS!r}[inventory_hostname] }}}}"
    out = on_hosts(
        f"systemctl show -p {SHOW} -- {unit}; pid=$(systemctl show -p MainPID --value -- {unit}); "
        "echo Owner=$(stat -c %U /proc/$pid 2>/dev/null)"
    )
    return {
        h: dict(line.partition("=")[::2] for line in text.splitlines()) for h, text in out.items()
    }


def journal(since: float) -> dict[str, list[dict]]:
    """Each host's journal entries of its unit since `since` (the engine's lines and
    systemd's about it; the hosts' clock is the controller's)."""
    unit = f"{{{{ {UNITS!r}[inventory_hostname] }}}}"
    fields = "_SYSTEMD_UNIT,_UID,_PID,MESSAGE"
    out = on_hosts(
        f"journalctl -u {unit} --since=@{int(since)} --no-pager -o json --output-fields={fields}",
        become=True,
    )
    return {h: [json.loads(line) for line in text.splitlines()] for h, text in out.items()}


class Backfill:
    """One test's backfill: its buckets, its settings and log dir on the hosts, its
    inventory (the fleet's hosts and connection), and run_blob_migration.yml runs."""

    def __init__(self, name: str, stores: tuple[SeaweedServer, SeaweedServer], tmp: Path):
        self.old, self.new = stores
        self.buckets = (f"h2old-{name}-{os.getpid()}", f"h2new-{name}-{os.getpid()}")
        self.old.create_bucket(self.buckets[0])
        self.new.create_bucket(self.buckets[1])
        self.tmp = tmp
        self.dir = f"{HOST_ROOT}/{name}"
        self.log_dir = f"{self.dir}/logs"
        self.summary = tmp / "summary.json"
        self.fetch_dir = tmp / "controller-runs"
        self.inventory = tmp / "inventory"

    def setup(
        self, blobs: dict[str, bytes], hosts: dict[str, dict] | None = None, **extra: object
    ) -> None:
        seed(self.old, self.buckets[0], blobs)
        local = self.tmp / "blobshift_settings.py"
        local.write_text(
            settings_text(
                new=self.new.settings_dict(self.buckets[1], riak=False, chunk=200),
                old=self.old.settings_dict(self.buckets[0], riak=True, chunk=200),
                migrating=True,
            )
        )
        # A fresh tree for the test; the settings are blobapp's, readable by it alone.
        on_hosts(
            f"rm -rf {self.dir} && install -d -o blobapp -g blobapp -m 0750 {self.dir}", become=True
        )
        run(
            "ansible",
            "manage1:manage2",
            "--become",
            "-m",
            "ansible.builtin.copy",
            "-a",
            f"src={local} dest={self.dir}/blobshift_settings.py owner=blobapp group=blobapp "
            "mode=0600",
        )
        self.write_inventory(hosts or {}, **extra)

    def write_inventory(self, hosts: dict[str, dict], **extra: object) -> None:
        inv = self.inventory
        (inv / "group_vars").mkdir(parents=True, exist_ok=True)
        (inv / "host_vars").mkdir(exist_ok=True)
        for host, values in hosts.items():
            (inv / "host_vars" / f"{host}.yml").write_text(yaml.safe_dump(values))
        build = REPO / "build" / "fleet"
        (inv / "hosts.ini").write_text(
            "# The fleet's django_manage hosts; the stores are on the controller.\n"
            "[django_manage]\n"
            + "".join(f"{h} ansible_host={ADDRESSES[h]}\n" for h in HOSTS)
            + f"\n[riakcs]\nunit-old-s3 ansible_host={GATEWAY} s3_port={BASE_PORT}\n"
            f"\n[riakcs_new]\nunit-new-s3 ansible_host={GATEWAY} s3_port={BASE_PORT + 20}\n"
        )
        group_vars = {
            # inventories/fleet's connection: SSH as deploy, become through sudo.
            "ansible_connection": "ssh",
            "ansible_user": "deploy",
            "ansible_ssh_private_key_file": str(build / "id_ed25519"),
            "ansible_ssh_common_args": f"-F {build / 'ssh_config'}",
            "ansible_python_interpreter": "/usr/bin/python3",
            # What roles/blobshift_engine sets, its play skipped (installed by `stores`).
            "blobshift_engine_interpreter": "/opt/blobshift/venv/bin/python",
            # The state derivation (roles/blobshift_state): migrating to a Riak CS cluster.
            "blobshift_env": "fleetunit",
            "localsettings": {"BLOB_DB_MIGRATING_FROM_S3_TO_S3": True, "TEMP_RIAKCS_PROXY": False},
            "blobshift_new_store": {"bucket": "blobdb"},
            "blobshift_old_store": {"bucket": "blobdb", "signature_version": "s3"},
            "secrets": dict.fromkeys(
                [
                    "RIAKCS_S3_ACCESS_KEY",
                    "RIAKCS_S3_SECRET_KEY",
                    "OLD_S3_BLOB_DB_ACCESS_KEY",
                    "OLD_S3_BLOB_DB_SECRET_KEY",
                ],
                "unused",
            ),
            "blob_migration_settings": f"{self.dir}/blobshift_settings.py",
            "blob_migration_log_dir": self.log_dir,
            "blob_migration_user": "blobapp",
            "blob_migration_unit_prefix": PREFIX,
            "blob_migration_unit_restart_sec": 1,
            "blob_migration_ranges": 0,
            "blob_migration_chunk_size": 10,
            # Each poll is a module run per shard, on the host and the controller: every 2 s.
            "blob_migration_poll_delay": 2,
            "blob_migration_fetch_interval": 2,
            # SeaweedFS fails the key probe for "a//b" and "x/": log such keys (as the lab).
            "blob_migration_log_unfaithful_keys": True,
            "blob_migration_min_free_mb": 10,
            "blob_migration_textfile_dir": f"{self.dir}/no-textfile-dir",
            "blobshift_fetch_dir": str(self.fetch_dir),
            "blob_migration_summary_file": str(self.summary),
            **extra,
        }
        (inv / "group_vars" / "all.yml").write_text(yaml.safe_dump(group_vars))

    def start(self, *extra: str) -> subprocess.Popen[str]:
        """run_blob_migration.yml in a session of its own (killed whole by `kill`)."""
        return subprocess.Popen(
            [
                str(BIN / "ansible-playbook"),
                "-i",
                str(self.inventory),
                "playbooks/run_blob_migration.yml",
                # Installed by the `stores` fixture: the play's own install would change nothing.
                "--skip-tags",
                "blobshift_engine",
                *extra,
            ],
            cwd=REPO,
            # Pipelining: one SSH round trip per task instead of three (time only).
            env=env(ANSIBLE_PIPELINING="1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )

    def play(self, proc: subprocess.Popen[str] | None = None, *extra: str) -> str:
        proc = proc or self.start(*extra)
        out, _ = proc.communicate(timeout=150)
        print(out[-8000:])  # shown when the test fails
        assert proc.returncode == 0, out[-6000:]
        for secret in (OLD_KEYS[1], NEW_KEYS[1]):
            assert secret not in out
        return out

    def shards(self) -> dict[str, dict]:
        return {s["shard"]: s for s in json.loads(self.summary.read_text())["shards"]}

    def status(self) -> dict[str, dict]:
        """Each host's status file (as blobapp: the log dir is its own)."""
        index = "{{ '0' if inventory_hostname == 'manage1' else '1' }}"
        name = f"{self.log_dir}/migrate_backend-shard{index}of2-status.json"
        out = on_hosts(f"cat {name} 2>/dev/null || echo null", become=True)
        return {h: json.loads(text) or {} for h, text in out.items()}

    def copied_everything(self, blobs: dict[str, bytes], crashed: bool = False) -> None:
        """Every blob in the new store; each key listed and handled once by the pass, or,
        when an engine crashed, at least once (the keys it listed past its checkpoint are
        listed and handled again)."""
        assert contents(self.new, self.buckets[1]) == md5s(blobs)
        totals = [s["pass_totals"] for s in self.shards().values()]
        for name in ("listed", "handled"):
            done = sum(
                t["listed"] if name == "listed" else t["copied"] + t["skipped"] for t in totals
            )
            assert done >= len(blobs) if crashed else done == len(blobs), (name, totals)


@pytest.fixture
def backfill(request, stores, tmp_path) -> Iterator[Backfill]:
    job = Backfill(request.node.name.split("_")[1], stores, tmp_path)
    yield job
    # Whatever the test left: no unit of the test's keeps running or stays failed.
    names = " ".join(UNITS.values())
    on_hosts(
        f"systemctl stop {names}; systemctl reset-failed {names}; rm -rf {job.dir}; true",
        become=True,
    )


def test_1_each_shard_runs_as_a_unit_of_blobapp_and_a_killed_engine_resumes(
    backfill: Backfill,
) -> None:
    """Each host's shard runs as its own transient unit whose engine is blobapp's process.
    kill -9 of manage1's engine: systemd restarts it (NRestarts 1, a new process, still
    blobapp's) and it resumes from its checkpoint (lists only the keys after it). Every
    blob is copied; the summary names each shard's host, launcher and unit; the engine's
    messages are in the journal."""
    blobs = random_blobs(200, 512)
    # manage1's shard ~50 s, killed at its first checkpoint and still copying after its
    # restart however loaded the machine (at 5/s it could end before a look saw the
    # restarted unit: gone, as a finished transient unit is); manage2's ~5 s.
    backfill.setup(
        blobs,
        hosts={"manage1": {"blob_migration_max_rps": 2}, "manage2": {"blob_migration_max_rps": 20}},
    )
    started = time.time()
    proc = backfill.start()
    try:
        first = wait_for(
            "a checkpoint of manage1's shard",
            lambda: (s := backfill.status()["manage1"]).get("position") and s,
        )
        # The unit's main process is the engine (its status file's pid), blobapp's.
        unit = units()["manage1"]
        assert (unit["MainPID"], unit["User"], unit["Owner"]) == (
            str(first["pid"]),
            "blobapp",
            "blobapp",
        )
        on_hosts(f"kill -9 {first['pid']}", hosts="manage1", become=True)
        again = wait_for(
            "systemd to restart manage1's engine",
            lambda: (
                (u := units()["manage1"])["NRestarts"] == "1"
                and u["ActiveState"] == "active"
                and u["MainPID"] not in ("0", str(first["pid"]))
                # Past systemd's own fork, which is the main pid, as root, until it drops
                # to User= and runs the engine (seen once: Owner root for a moment).
                and u["Owner"] not in ("", "root")
                and u
            ),
        )
        assert (again["User"], again["Owner"]) == ("blobapp", "blobapp")
    finally:
        backfill.play(proc)
    # Each host's engine logged to the journal from its unit, as blobapp, the process whose
    # pid its status file holds (manage1: the restarted one).
    final = backfill.status()
    for host, entries in journal(started).items():
        engine = [e for e in entries if e.get("_SYSTEMD_UNIT") == UNITS[host]]
        assert {e["_UID"] for e in engine} == {BLOBAPP_UID}, (host, engine[:3])
        assert str(final[host]["pid"]) in {e["_PID"] for e in engine}
        assert any("backfill finished" in e["MESSAGE"] for e in engine)
        scheduled = [e for e in entries if "Scheduled restart job" in str(e.get("MESSAGE"))]
        assert len(scheduled) == (host == "manage1"), (host, scheduled)
    shards = backfill.shards()
    assert {s: (v["host"], v["launcher"], v["unit"], v["outcome"]) for s, v in shards.items()} == {
        "0/2": ("manage1", "systemd", UNITS["manage1"], "finished"),
        "1/2": ("manage2", "systemd", UNITS["manage2"], "finished"),
    }
    # The restarted engine went on from the checkpoint: its own run listed fewer keys than
    # the pass did.
    mine = shards["0/2"]
    assert 0 < mine["counts"]["listed"] < mine["pass_totals"]["listed"], mine
    backfill.copied_everything(blobs, crashed=True)


def test_2_a_killed_controller_leaves_the_unit_running_and_a_rerun_reattaches(
    backfill: Backfill,
) -> None:
    """The controller's ansible-playbook killed (SIGKILL) while manage1's shard copies: its
    unit copies on; a re-run re-attaches to it (the same engine process and invocation,
    not restarted) and finishes, and manage2's shard too, wherever the kill left it."""
    blobs = random_blobs(200, 512)
    # manage1's shard ~130 s: mid-pass at the kill and still at the re-run's re-attach, which
    # takes a minute or more of preflight on a loaded machine (at ~65 s, CI saw it end first).
    backfill.setup(blobs, hosts={"manage1": {"blob_migration_max_rps": 0.75}})
    proc = backfill.start()
    try:
        before = wait_for(
            "manage1's unit copying",
            lambda: (
                (u := units()["manage1"])["ActiveState"] == "active"
                and (backfill.status()["manage1"].get("counts") or {}).get("copied")
                and u
            ),
        )
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # ansible-playbook and its SSH sessions
        proc.wait(30)
    copied = backfill.status()["manage1"]["counts"]["copied"]
    wait_for(
        "manage1's unit to copy on without the controller",
        lambda: backfill.status()["manage1"]["counts"]["copied"] > copied,
    )
    out = backfill.play()
    assert (
        f"re-attaching to unit {UNITS['manage1']} (active/running, main pid "
        f"{before['MainPID']}, invocation {before['InvocationID']})" in " ".join(out.split())
    )
    shards = backfill.shards()
    assert (shards["0/2"]["attached"], shards["0/2"]["outcome"]) == (True, "finished")
    assert shards["1/2"]["outcome"] == "finished"
    # The engine that finished is the one started before the kill: nothing restarted.
    assert str(backfill.status()["manage1"]["pid"]) == before["MainPID"]
    backfill.copied_everything(blobs)


def test_3_a_lost_host_s_shard_is_finished_by_the_other_from_its_last_checkpoint(
    backfill: Backfill,
) -> None:
    """manage2 is lost for good mid-pass (its engine killed, its unit stopped, the
    controller's playbook killed with it): re-run with blob_migration_lost_hosts, manage2
    is not contacted, and manage1 runs manage2's shard too, as a unit of its own, from the
    checkpoint the controller fetched. Every blob is copied; the keys of manage2's shard
    up to that checkpoint are not listed again."""
    blobs = random_blobs(200, 512)
    # manage2's shard (~100 keys) ~65 s: still mid-pass when the controller's first copy of
    # its checkpoint arrives, which on a loaded machine is ~40 s after the playbook's start.
    backfill.setup(blobs, hosts={"manage2": {"blob_migration_max_rps": 1.5}})
    held = backfill.fetch_dir / "manage2" / "migrate_backend-shard1of2-checkpoint.json"
    proc = backfill.start()
    try:
        checkpoint = wait_for(
            "the controller's copy of manage2's checkpoint, mid-pass",
            lambda: (
                held.exists()
                and (c := json.loads(held.read_text())).get("position")
                and not c.get("complete")
                and (c.get("totals") or {}).get("copied", 0) < 80
                and c
            ),
            timeout=180,
        )
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    # The host dies: its engine and unit gone, nothing of it reachable by the re-run.
    on_hosts(
        f"systemctl kill -s KILL {UNITS['manage2']}; systemctl stop {UNITS['manage2']}; true",
        hosts="manage2",
        become=True,
    )
    held_position = json.loads(held.read_text())["position"]
    assert held_position >= checkpoint["position"]
    # Gone for good: an address nothing answers on. Contacted, it would be unreachable and
    # fail the run.
    # Named with -e, as the operator does: the plays' host patterns see extra vars only.
    backfill.write_inventory({"manage2": {"ansible_host": "10.89.7.250"}})
    out = backfill.play(None, "-e", '{"blob_migration_lost_hosts": ["manage2"]}')
    recap = [line for line in out.split("PLAY RECAP")[1].splitlines() if "manage2" in line]
    assert recap and "unreachable=0" in recap[0], recap
    shards = backfill.shards()
    taken = shards["1/2"]
    assert (taken["host"], taken["taken_over_from"], taken["launcher"]) == (
        "manage1",
        "manage2",
        "systemd",
    ), taken
    # From a checkpoint the controller held: the one seen before the loss, or a later one
    # its copy got before the controller's run was gone.
    assert taken["from_position"] is not None, taken
    assert taken["from_position"] >= min(held_position, checkpoint["position"]), taken
    # Only the keys after the checkpoint were listed again by the survivor.
    assert 0 < taken["counts"]["listed"] < taken["pass_totals"]["listed"], taken
    assert shards["0/2"]["host"] == "manage1"
    assert contents(backfill.new, backfill.buckets[1]) == md5s(blobs)
