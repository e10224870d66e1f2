"""The phase playbooks refuse a wrong starting state or a missing confirmation before they
change anything: no env file edited, no host touched."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from blobshift.envedit import write_atomic
from blobshift.lab.runbook import REPO, Runbook


@pytest.fixture
def env(tmp_path):
    rb = Runbook(tmp_path, "riakcs", 0, 0)
    rb.prepare_env()
    return rb


def files(rb: Runbook) -> dict[str, str]:
    root = rb.out
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def play(rb: Runbook, playbook: str, *extra: str) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent
    return subprocess.run(
        [
            str(bin_dir / "ansible-playbook"),
            "-i",
            str(rb.inventory),
            f"playbooks/{playbook}",
            *extra,
        ],
        cwd=REPO,
        env=rb.env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("playbook", "message"),
    [
        (
            "phase5_cleanup.yml",
            "'finish' applies to state(s) ['flipping'], but the files say 'steady'",
        ),
        ("rollback_to_migrating.yml", "'unflip' applies to state(s) ['flipping']"),
        ("rollback_to_steady.yml", "rollback_to_steady.yml undoes phase 1"),
        ("phase4_flip.yml", "outside the migrating state"),
    ],
)
def test_a_phase_out_of_order_changes_nothing(env, playbook, message):
    before = files(env)
    proc = play(env, playbook)
    assert proc.returncode != 0
    assert message in " ".join(proc.stdout.split()), proc.stdout[-2000:]
    assert files(env) == before
    assert "changed=0" in proc.stdout and "changed=1" not in proc.stdout


def test_production_needs_the_confirmation_naming_it(env):
    public = env.out / "environments" / "local" / "public.yml"
    write_atomic(
        public,
        public.read_text().replace(
            "blobshift_confirm_required: false", "blobshift_confirm_required: true"
        ),
    )
    before = files(env)
    proc = play(env, "phase1_send_writes_to_new.yml")
    assert proc.returncode != 0
    assert "run it again with -e confirm=local" in " ".join(proc.stdout.split())
    proc = play(env, "phase1_send_writes_to_new.yml", "-e", "confirm=production")
    assert proc.returncode != 0
    assert files(env) == before


def test_check_mode_shows_the_env_diff_and_writes_nothing(env):
    before = files(env)
    proc = play(env, "phase1_send_writes_to_new.yml", "--check", "--diff", "--tags", "always")
    out = proc.stdout
    assert "-  BLOB_DB_MIGRATING_FROM_S3_TO_S3: false" in out
    assert "+  BLOB_DB_MIGRATING_FROM_S3_TO_S3: true" in out
    assert "steady -> migrating_riakcs" in " ".join(out.split())
    assert files(env) == before
