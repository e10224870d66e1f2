"""ansible-playbook runs against environments of their own, with a real nginx.

- every invalid input is refused by every playbook with a message naming the variable and
  the file, before any rendered file changes;
- deploy_proxy.yml --tags=nginx_sites creates and removes the temporary site;
- --check changes nothing and --diff shows the site change;
- a site nginx rejects is restored and nginx is not reloaded;
- secrets never appear in the output, even with -vvv --diff.
"""

from __future__ import annotations

import socket
import time

import pytest
import yaml
from ansible_env import MAIN_PORT, NEW_NODE, OLD_NODE, REPO, SECRETS, TEMP_PORT, VENV_BIN

PLAYBOOKS = ("deploy_proxy.yml", "update_config.yml")


def ok(result):
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


def output(result) -> str:
    return " ".join((result.stdout + result.stderr).split())


def listening(port: int, expected: bool, timeout: float = 5.0) -> bool:
    """Whether 127.0.0.1:port accepts connections, waiting up to `timeout` for `expected`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                state = True
        except OSError:
            state = False
        if state == expected or time.monotonic() > deadline:
            return state
        time.sleep(0.1)


def converge(env):
    """The lab_env fixture hands the environment over converged in the steady state."""
    assert env.rendered() == env.baseline


def make_migrating(env):
    env.set_state("migrating")
    env.riakcs_new = [NEW_NODE]


BAD = {
    "both flags": (
        lambda env: env.public.update(
            localsettings={"BLOB_DB_MIGRATING_FROM_S3_TO_S3": True, "TEMP_RIAKCS_PROXY": True}
        ),
        "localsettings.BLOB_DB_MIGRATING_FROM_S3_TO_S3 and localsettings.TEMP_RIAKCS_PROXY "
        "are both true in environments/t/public.yml",
    ),
    "migrating without a new store": (
        lambda env: env.set_state("migrating"),
        "localsettings.BLOB_DB_MIGRATING_FROM_S3_TO_S3 is true but there is no new store: add "
        "the new cluster's nodes under [riakcs_new] in inventories/t/hosts.ini, or set "
        "blobshift_new_store.external_url in environments/t/public.yml",
    ),
    "missing secret": (
        lambda env: (make_migrating(env), env.secrets.pop("OLD_S3_BLOB_DB_SECRET_KEY")),
        "secrets.OLD_S3_BLOB_DB_SECRET_KEY is missing or empty in environments/t/vault.yml",
    ),
    "flipping with riakcs_new": (
        lambda env: (env.set_state("flipping"), setattr(env, "riakcs_new", [NEW_NODE])),
        "localsettings.TEMP_RIAKCS_PROXY is true but [riakcs_new] in inventories/t/hosts.ini "
        "still lists",
    ),
    "host in both clusters": (
        lambda env: (make_migrating(env), setattr(env, "riakcs_new", [OLD_NODE])),
        "are in both [riakcs] and [riakcs_new] in inventories/t/hosts.ini",
    ),
    "flag not a boolean": (
        lambda env: env.public.update(localsettings={"BLOB_DB_MIGRATING_FROM_S3_TO_S3": "yes"}),
        "localsettings.BLOB_DB_MIGRATING_FROM_S3_TO_S3 in environments/t/public.yml must be "
        "true or false",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_invalid_environment_is_refused_before_any_change(lab_env, case):
    converge(lab_env)
    before = lab_env.rendered()
    assert before, "the valid environment rendered nothing"
    mutate, message = BAD[case]
    mutate(lab_env)
    lab_env.write()
    for pb in PLAYBOOKS:
        result = lab_env.play(pb)
        assert result.returncode != 0, f"{pb} accepted {case}"
        assert message in output(result), output(result)[-3000:]
        assert "nothing was changed" in output(result)
        assert "PLAY [Deploy the S3 proxy sites]" not in result.stdout
        assert "PLAY [Update the app's blob store settings]" not in result.stdout
    assert lab_env.rendered() == before


def test_malformed_public_yml_is_refused(lab_env):
    converge(lab_env)
    before = lab_env.rendered()
    lab_env.write(public_text="localsettings:\n  BLOB_DB_MIGRATING_FROM_S3_TO_S3: [true\n")
    for pb in PLAYBOOKS:
        result = lab_env.play(pb)
        assert result.returncode != 0
        text = output(result)
        assert "Syntax Error while loading YAML" in text or "YAML" in text, text[-2000:]
        assert "environments/t/public.yml" in text, text[-2000:]
    assert lab_env.rendered() == before


def test_wrong_or_missing_vault_password_is_refused(lab_env, tmp_path):
    converge(lab_env)
    before = lab_env.rendered()
    wrong = tmp_path / "wrong-password.txt"
    wrong.write_text("not-the-password\n")
    for pb in PLAYBOOKS:
        result = lab_env.play(pb, password_file=wrong)
        assert result.returncode != 0
        text = output(result)
        assert "could not be decrypted with the vault password given" in text, text[-2000:]
        assert "environments/t/vault.yml" in text, text[-2000:]
        # No password at all (no terminal): the password script says what to set.
        result = lab_env.play(pb, env={"BLOBSHIFT_VAULT_PASSWORD_FILE": None})
        assert result.returncode != 0
        assert "set BLOBSHIFT_VAULT_PASSWORD_FILE" in output(result), output(result)[-2000:]
    assert lab_env.rendered() == before


def site_files(env, name: str) -> tuple[bool, bool]:
    return (
        (env.sites / "sites-available" / f"blobshift_{name}").exists(),
        (env.sites / "sites-enabled" / f"blobshift_{name}").is_symlink(),
    )


def test_nginx_sites_tag_creates_and_removes_the_temporary_site(lab_env):
    converge(lab_env)
    assert listening(MAIN_PORT, True)
    assert site_files(lab_env, "riakcs_new") == (False, False)

    make_migrating(lab_env)
    lab_env.write()
    result = ok(lab_env.play("deploy_proxy.yml", "--tags=nginx_sites"))
    assert "Render the proxy sites" in result.stdout
    assert site_files(lab_env, "riakcs_new") == (True, True)
    text = (lab_env.sites / "sites-enabled/blobshift_riakcs_new").read_text()
    assert f"listen 127.0.0.1:{TEMP_PORT};" in text and "server 127.0.0.3:19620;" in text
    assert listening(TEMP_PORT, True)

    # The flip: new nodes in [riakcs], TEMP_RIAKCS_PROXY: both ports reach them.
    lab_env.set_state("flipping")
    lab_env.riakcs, lab_env.riakcs_new = [NEW_NODE], []
    lab_env.write()
    ok(lab_env.play("deploy_proxy.yml", "--tags=nginx_sites"))
    for name in ("riakcs", "riakcs_new"):
        text = (lab_env.sites / f"sites-enabled/blobshift_{name}").read_text()
        assert "server 127.0.0.3:19620;" in text and "127.0.0.2" not in text

    # Clean up: TEMP_RIAKCS_PROXY removed, the temporary site goes away (file and link).
    lab_env.set_state("steady")
    lab_env.write()
    result = ok(lab_env.play("deploy_proxy.yml", "--tags=nginx_sites"))
    assert site_files(lab_env, "riakcs_new") == (False, False)
    assert not listening(TEMP_PORT, False)
    assert listening(MAIN_PORT, True)


def test_check_mode_changes_nothing_and_diff_shows_the_site(lab_env):
    converge(lab_env)
    before = lab_env.rendered()
    make_migrating(lab_env)
    lab_env.write()
    result = ok(lab_env.play("deploy_proxy.yml", "--check", "--diff"))
    assert f"+    listen 127.0.0.1:{TEMP_PORT};" in result.stdout
    assert "+    server 127.0.0.3:19620;" in result.stdout
    result = ok(lab_env.play("update_config.yml", "--check", "--diff"))
    assert lab_env.rendered() == before
    assert not listening(TEMP_PORT, False, timeout=0)


def test_site_rejected_by_nginx_is_restored(lab_env):
    converge(lab_env)
    before = lab_env.rendered()
    lab_env.public["nginx_proxy_client_max_body_size"] = "9Q"
    make_migrating(lab_env)
    lab_env.write()
    result = lab_env.play("deploy_proxy.yml")
    assert result.returncode != 0
    assert "nginx rejected the new proxy sites" in output(result)
    assert lab_env.rendered() == before
    assert not listening(TEMP_PORT, False, timeout=0)
    assert listening(MAIN_PORT, True)


def test_secrets_never_in_output(lab_env):
    converge(lab_env)
    make_migrating(lab_env)
    lab_env.write()
    results = [ok(lab_env.play(pb, "-vvv", "--diff")) for pb in PLAYBOOKS]
    text = "".join(r.stdout + r.stderr for r in results)
    assert "Render localsettings.py" in text
    for key in ("RIAKCS_S3_SECRET_KEY", "OLD_S3_BLOB_DB_SECRET_KEY"):
        assert SECRETS[key] not in text
    mode = lab_env.settings.stat().st_mode & 0o777
    assert mode == 0o640
    assert (lab_env.lab_root / "app/restarts.log").read_text().count("reloaded") == 2


def test_settings_rejected_by_the_loader_leave_the_file_alone(lab_env):
    converge(lab_env)
    before = lab_env.rendered()
    lab_env.public["blobshift_new_store"] = {
        **lab_env.public["blobshift_new_store"],
        "verify": "/nonexistent/ca-bundle.pem",
    }
    lab_env.write()
    result = lab_env.play("update_config.yml")
    assert result.returncode != 0
    text = output(result)
    assert "was NOT changed" in text and "CA bundle" in text, text[-2000:]
    assert lab_env.rendered() == before
    for key in SECRETS.values():
        assert key not in text or key.isupper()


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_example_environment_passes_syntax_check_and_preflight(playbook):
    import os
    import subprocess

    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
        "BLOBSHIFT_VAULT_PASSWORD_FILE": str(
            REPO / "environments/example/EXAMPLE-ONLY-vault-password.txt"
        ),
    }
    cmd = [str(VENV_BIN / "ansible-playbook"), "-i", "inventories/example"]
    for args in ([f"playbooks/{playbook}", "--syntax-check"], ["playbooks/preflight.yml"]):
        result = subprocess.run(cmd + args, cwd=REPO, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert yaml.safe_load((REPO / "environments/example/public.yml").read_text())


def test_update_config_restarts_app_hosts_batch_by_batch(lab_env):
    """serial: each batch is rendered and restarted before the next one starts."""
    app = lab_env.lab_root / "apps"
    lab_env.webworkers = [f"web{i} ansible_host=127.0.0.1" for i in (1, 2, 3)]
    lab_env.public.update(
        blobshift_update_config_serial=1,
        localsettings_path=f"{app}/{{{{ inventory_hostname }}}}/localsettings.py",
        localsettings_app_restart_commands=[
            f"ls {app}/*/localsettings.py | wc -l | sed 's/^/{{{{ inventory_hostname }}}} /'"
            f" >> {app}/restarts.log"
        ],
    )
    lab_env.write()
    result = ok(lab_env.play("update_config.yml"))
    # One batch per host (lab-app, the django_manage host, is a fourth batch).
    assert result.stdout.count("PLAY [Update the app's blob store settings]") == 4
    lines = (app / "restarts.log").read_text().split()
    # Each host restarted when only the batches before it (and its own) had new settings.
    counts = dict(zip(lines[0::2], map(int, lines[1::2]), strict=True))
    assert sorted(counts.values()) == [1, 2, 3, 4]
    assert ok(lab_env.play("update_config.yml")).stdout.count("changed=1") == 0
