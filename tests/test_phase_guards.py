"""The phase playbooks refuse a wrong starting state or a missing confirmation before they
change anything: no env file edited, no host touched."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blobshift.envedit import write_atomic
from blobshift.lab.runbook import REPO, Runbook


@pytest.fixture
def env(tmp_path):
    """A private copy of the local environment whose hosts' files live under tmp_path too:
    its settings, nginx sites and logs (seeded as a converged host would have them), and
    ports of its own, so that a guard that let a phase through could touch neither the
    lab (/var/lib/blobshift-lab, :8080/:8081) nor the system nginx."""
    rb = Runbook(tmp_path, "riakcs", 0, 0)
    rb.prepare_env()
    hosts = tmp_path / "hosts"
    public = rb.out / "environments" / "local" / "public.yml"
    text = public.read_text().replace("/var/lib/blobshift-lab", str(hosts))
    text = text.replace("blobshift_proxy_port: 8080", "blobshift_proxy_port: 18480")
    text = text.replace("blobshift_proxy_temp_port: 8081", "blobshift_proxy_temp_port: 18481")
    ngx = hosts / "nginx"
    text += (
        f"nginx_proxy_conf_dir: {ngx}\n"
        f"nginx_proxy_log_dir: {ngx}/logs\n"
        f"nginx_proxy_store_log: {ngx}/logs/blobshift_store.log\n"
        f"nginx_proxy_pid_file: {ngx}/nginx.pid\n"
    )
    write_atomic(public, text)
    for sub in ("app", "nginx/sites-available", "nginx/sites-enabled", "nginx/logs"):
        (hosts / sub).mkdir(parents=True, exist_ok=True)
    (hosts / "app/localsettings.py").write_text("# as rendered before the test\n")
    (hosts / "nginx/sites-available/blobshift_riakcs").write_text("# the main site\n")
    (hosts / "nginx/sites-enabled/blobshift_riakcs").symlink_to(
        hosts / "nginx/sites-available/blobshift_riakcs"
    )
    return rb


def files(rb: Runbook) -> dict[str, str]:
    """Checksums of the env's files and of its hosts' rendered files (links by target)."""
    root = rb.out
    return {
        str(p.relative_to(root)): hashlib.sha256(
            os.readlink(p).encode() if p.is_symlink() else p.read_bytes()
        ).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() or p.is_symlink()
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
        (
            "phase4_flip.yml",
            "which both exist only while migrating; environment 'local' is in state 'steady'",
        ),
    ],
)
@pytest.mark.reliability(
    "A phase or rollback playbook run out of order is refused, naming the state the files "
    "are in: one line, non-zero exit, env and host files unchanged (checksums)",
    group="Bad input",
)
def test_a_phase_out_of_order_changes_nothing(env, playbook, message, evidence):
    before = files(env)
    assert any(k.endswith("localsettings.py") for k in before)
    assert any("sites-enabled" in k for k in before)
    proc = play(env, playbook)
    assert proc.returncode != 0
    lines = [
        ln
        for ln in (proc.stdout + proc.stderr).splitlines()
        if message in ln and ln.startswith("[ERROR]")
    ]
    assert lines, proc.stdout[-2000:]  # the whole message on one line
    assert files(env) == before
    assert "changed=0" in proc.stdout and "changed=1" not in proc.stdout
    line = lines[0].strip()
    for prefix in ("[ERROR]: ", "Task failed: ", "Action failed: ", "Module failed: "):
        line = line.removeprefix(prefix)
    evidence["message"] = line.replace(f"{env.out}/", "")
    evidence["exit code"] = proc.returncode
    evidence["files unchanged"] = len(before)


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
    proc = play(env, "phase1_send_writes_to_new.yml", "--check", "--diff")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    out = proc.stdout
    assert "-  BLOB_DB_MIGRATING_FROM_S3_TO_S3: false" in out
    assert "+  BLOB_DB_MIGRATING_FROM_S3_TO_S3: true" in out
    assert "steady -> migrating_riakcs" in " ".join(out.split())
    assert files(env) == before


ENV_EDITING = [
    "phase1_send_writes_to_new.yml",
    "phase4_flip.yml",
    "phase5_cleanup.yml",
    "rollback_to_steady.yml",
    "rollback_to_migrating.yml",
]
SKIPS = [
    (("--tags", "nginx_sites"), "--tags nginx_sites"),  # the runbook's habit for the proxy
    (("--tags", "always"), "--tags always"),  # the env edit alone, no app update
    (("--skip-tags", "always"), "--skip-tags always"),  # skips even `always` tasks
    (("--skip-tags", "verify,blobshift_state"), "--skip-tags blobshift_state,verify"),
    (("--limit", "proxy"), "--limit proxy"),  # hosts left on the old settings
]


@pytest.mark.parametrize("playbook", ENV_EDITING)
@pytest.mark.parametrize(("flags", "named"), SKIPS, ids=[s[1] for s in SKIPS])
def test_a_phase_refuses_what_would_skip_a_part_of_it(env, playbook, flags, named):
    before = files(env)
    proc = play(env, playbook, *flags, "--check")
    assert proc.returncode != 0
    message = " ".join((proc.stdout + proc.stderr).split())
    assert f"{playbook} refuses {named}: a phase runs whole" in message, message[-2000:]
    assert "TASK [" not in proc.stdout  # refused before any task
    assert files(env) == before


def test_host_vars_still_win_after_the_phase_edits_the_environment(env):
    # After env_transition.yml edits public.yml, the plays of the phase must see it at
    # group_vars precedence: an override in host_vars keeps winning (an include_vars of
    # public.yml would outrank it and deploy the proxy with the environment's value).
    override = env.out / "hosts" / "nginx" / "logs-lab-proxy"
    override.mkdir()
    host_vars = env.inventory / "host_vars"
    host_vars.mkdir(exist_ok=True)
    (host_vars / "lab-proxy.yml").write_text(
        f"nginx_proxy_log_dir: {override}\nnginx_proxy_store_log: {override}/store.log\n"
    )
    proc = play(env, "phase1_send_writes_to_new.yml", "--check", "--diff")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert f"access_log {override}/" in proc.stdout
    assert f"access_log {env.out}/hosts/nginx/logs/" not in proc.stdout


def store_log(path: Path, lines: list[tuple[str, str, str, int]]) -> Path:
    """A proxy store log (roles/nginx_proxy's format) of app requests, in this order, the
    last one just now."""
    now = time.time()
    path.write_text(
        "".join(
            json.dumps(
                {
                    "msec": f"{now - (len(lines) - i) * 0.1:.3f}",
                    "site": site,
                    "method": method,
                    "uri": f"/blobdb/{key}",
                    "status": str(status),
                    "agent": "Boto3/1.44",
                }
            )
            + "\n"
            for i, (site, method, key, status) in enumerate(lines)
        )
    )
    return path


def test_the_readiness_gate_refuses_while_app_reads_fall_back_to_the_old_store(env, tmp_path):
    public = env.out / "environments" / "local" / "public.yml"
    write_atomic(
        public,
        public.read_text().replace(
            "BLOB_DB_MIGRATING_FROM_S3_TO_S3: false", "BLOB_DB_MIGRATING_FROM_S3_TO_S3: true"
        ),
    )
    # The engine is this checkout's (not installed on the "proxy host" here).
    engine = (
        "-e",
        f"blobshift_engine_venv={Path(sys.executable).parent.parent}",
        "--skip-tags",
        "blobshift_engine",
    )
    red = store_log(
        tmp_path / "red.log",
        [
            ("riakcs_new", "GET", "a", 404),
            ("riakcs", "GET", "a", 200),  # a fallback
            ("riakcs_new", "HEAD", "b", 404),
            ("riakcs", "HEAD", "b", 200),  # exists(): one too
            ("riakcs_new", "GET", "c", 200),
        ],
    )
    proc = play(env, "check_readiness.yml", "-e", f"blob_migration_readiness_log={red}", *engine)
    assert proc.returncode != 0
    text = " ".join(proc.stdout.split())
    assert "2 fallback(s) in the last 20s" in text, text[-3000:]
    assert "blobdb/a" in text and "blobdb/b" in text
    # The app's deletes HEAD the old store before deleting there: no read of it.
    green = store_log(
        tmp_path / "green.log",
        [
            ("riakcs_new", "GET", "a", 200),
            ("riakcs_new", "HEAD", "d", 200),
            ("riakcs_new", "DELETE", "d", 204),
            ("riakcs", "HEAD", "d", 200),
            ("riakcs", "DELETE", "d", 204),
        ],
    )
    proc = play(env, "check_readiness.yml", "-e", f"blob_migration_readiness_log={green}", *engine)
    assert proc.returncode == 0, proc.stdout[-3000:]
