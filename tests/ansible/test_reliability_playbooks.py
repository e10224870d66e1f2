"""The playbook side of the reliability battery (issue 7): bad input and security.

Each case runs the real playbooks against an environment of its own (conftest.py's
`lab_env`, with an nginx of its own on 127.0.0.1:18180/18181), or reads the repository:

- a clear-text vault.yml and an app user or group that does not exist are refused with
  one line naming the file/variable and the fix, changing nothing;
- the rendered localsettings.py is 0640 and owned by the configured (non-root) app user;
- `--check --diff` of update_config.yml never shows the settings file's content;
- nginx listens only on the configured proxy address and ports;
- every vault.yml under environments/ is encrypted, only the lab-only ones ship their
  password, and the lab's password file is referenced by lab tooling only.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest
from ansible_env import (
    MAIN_PORT,
    NEW_NODE,
    REPO,
    SECRETS,
    TEMP_PORT,
    VENV_BIN,
    changed_count,
    error_line,
)

APP_USER = "blobshift-app"
# An address of its own on loopback (not the default 127.0.0.1), so that a listener that
# ignores nginx_proxy_listen_address cannot pass for one that honours it.
LISTEN = "127.0.0.9"


def ok(result):
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


def make_migrating(env):
    env.set_state("migrating")
    env.riakcs_new = [NEW_NODE]


def refused(env, playbook: str, fragment: str) -> str:
    """`playbook` exits non-zero with `fragment` on one line, and nothing changed."""
    before = env.snapshot()
    result = env.play(playbook)
    assert result.returncode != 0, f"{playbook} accepted it"
    line = error_line(result, fragment)
    assert changed_count(result) == 0
    assert env.snapshot() == before
    return line.replace(f"{env.root}/", "").replace(f"{env.lab_root}/", "")


# --- Bad input ---------------------------------------------------------------------------


@pytest.mark.reliability(
    "A vault.yml in clear text is refused by every playbook, naming the file and the fix "
    "(ansible-vault encrypt)",
    group="Security",
)
def test_clear_text_vault_is_refused(lab_env, evidence):
    lab_env.write(encrypt=False)
    assert SECRETS["RIAKCS_S3_SECRET_KEY"] in (lab_env.env_dir / "vault.yml").read_text()
    lines = [
        refused(lab_env, pb, "is not encrypted, but a vault file holds the environment's secrets")
        for pb in ("deploy_proxy.yml", "update_config.yml")
    ]
    for line in lines:
        assert "environments/t/vault.yml (linked from" in line, line
        assert "run `ansible-vault encrypt " in line and "nothing was changed" in line, line
        assert not any(value in line for value in SECRETS.values())
    evidence["message"] = lines[0]
    evidence["playbooks refused"] = len(lines)


@pytest.mark.reliability(
    "localsettings_owner/_group naming an account the app host lacks: refused before the "
    "settings file or its directory change",
    group="Bad input",
)
@pytest.mark.parametrize("missing", ["user", "group"])
def test_unknown_settings_owner_is_refused(lab_env, missing, evidence):
    owner, group = ("nosuch-blobshift-user", "root") if missing == "user" else ("root", "nosuch")
    lab_env.public.update(localsettings_owner=owner, localsettings_group=group)
    make_migrating(lab_env)  # a content change is pending: the refusal must keep it out
    lab_env.write()
    line = refused(lab_env, "update_config.yml", "does not exist on lab-app")
    name = owner if missing == "user" else group
    assert f"{missing} {name} does not exist on lab-app" in line, line
    assert "environments/t/public.yml" in line and "was NOT changed" in line, line
    evidence["message"] = line


# --- Security ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_user() -> tuple[int, int]:
    """A real non-root system user (and group) for the app, created when absent."""
    try:
        pwd.getpwnam(APP_USER)
    except KeyError:
        if os.geteuid() != 0:
            pytest.skip(f"creating the system user {APP_USER} needs root")
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", APP_USER],
            check=True,
            capture_output=True,
        )
    return pwd.getpwnam(APP_USER).pw_uid, grp.getgrnam(APP_USER).gr_gid


@pytest.mark.reliability(
    "The rendered localsettings.py is mode 0640 and owned by the configured app user and group",
    group="Security",
)
def test_settings_file_is_0640_and_owned_by_the_app_user(lab_env, app_user, evidence):
    lab_env.public.update(localsettings_owner=APP_USER, localsettings_group=APP_USER)
    make_migrating(lab_env)  # both stores' keys in the file
    lab_env.write()
    ok(lab_env.play("update_config.yml"))
    st = lab_env.blob_settings.stat()
    text = lab_env.blob_settings.read_text()
    assert all(value in text for value in SECRETS.values())
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o640, *app_user)
    app = lab_env.settings.stat()  # the app's file, which includes it
    assert (app.st_mode & 0o7777, app.st_uid, app.st_gid) == (0o640, *app_user)
    assert app_user[0] != 0 and app_user[1] != 0
    # A second run changes nothing (ownership and mode are part of the converged state).
    assert changed_count(ok(lab_env.play("update_config.yml"))) == 0
    evidence["mode"] = f"{st.st_mode & 0o7777:04o}"
    evidence["owner"] = f"{pwd.getpwuid(st.st_uid).pw_name}:{grp.getgrgid(st.st_gid).gr_name}"


@pytest.mark.reliability(
    "update_config.yml --check --diff reports the settings change without showing the file",
    group="Security",
)
def test_check_diff_never_shows_the_settings(lab_env, evidence):
    before = lab_env.snapshot()
    make_migrating(lab_env)
    lab_env.write()
    before = {k: v for k, v in before.items() if not k.startswith(str(lab_env.root))}
    result = ok(lab_env.play("update_config.yml", "--check", "--diff", "-v"))
    out = result.stdout + result.stderr
    # The change is reported (changed, censored), its content never shown.
    task = out.split("TASK [localsettings : Render the blob store settings", 1)[1]
    task = task.split("TASK [", 1)[0]
    assert "changed: [lab-app]" in task and "censored" in task, task
    for marker in ("S3_BLOB_DB_SETTINGS", "secret_key", "+++ after", "@@ "):
        assert marker not in task, task
    assert not any(value in out for value in SECRETS.values())
    after = {k: v for k, v in lab_env.snapshot().items() if not k.startswith(str(lab_env.root))}
    assert after == before
    evidence["bytes of diff output scanned"] = len(out.encode())
    evidence["secrets found"] = 0


def listeners(pids: list[int]) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket (v4 and v6) held by `pids`."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        for row in Path(table).read_text().splitlines()[1:]:
            cols = row.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            hex_addr, hex_port = local.split(":")
            raw = bytes.fromhex(hex_addr)
            if v6:
                words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
                addr = "[" + bytes(b"".join(words)).hex(":", 2) + "]"
            else:
                addr = ".".join(str(b) for b in raw[::-1])
            found.add((addr, int(hex_port, 16)))
    return found


@pytest.mark.reliability(
    "nginx listens only on the configured proxy address and ports (no wildcard, no IPv6, "
    "no default site)",
    group="Security",
)
def test_nginx_listens_only_on_the_proxy_address(lab_env, evidence):
    lab_env.public["blobshift_proxy_listen_address"] = LISTEN
    make_migrating(lab_env)
    lab_env.write()
    ok(lab_env.play("deploy_proxy.yml"))
    pids = lab_env.nginx_pids()
    assert len(pids) >= 2, "nginx master and worker"
    expected = {(LISTEN, MAIN_PORT), (LISTEN, TEMP_PORT)}
    found = listeners(pids)
    assert found == expected
    # The sites are the only server blocks: one listen each, on that address.
    enabled = sorted((lab_env.sites / "sites-enabled").iterdir())
    assert [p.name for p in enabled] == ["blobshift_riakcs", "blobshift_riakcs_new"]
    listens = [
        line.strip() for p in enabled for line in p.read_text().splitlines() if "listen" in line
    ]
    assert listens == [f"listen {LISTEN}:{MAIN_PORT};", f"listen {LISTEN}:{TEMP_PORT};"]
    evidence["nginx processes"] = len(pids)
    evidence["listening sockets"] = ", ".join(f"{a}:{p}" for a, p in sorted(found))
    evidence["wildcard or other listeners"] = len(found - expected)


def test_the_site_template_listens_only_on_the_configured_address():
    """No default_server, no second listen, no IPv6 or wildcard in the role's templates."""
    for template in (REPO / "roles/nginx_proxy/templates").iterdir():
        listens = [ln.strip() for ln in template.read_text().splitlines() if "listen" in ln.split()]
        assert listens in ([], ["listen {{ nginx_proxy_listen_address }}:{{ item.port }};"]), (
            template,
            listens,
        )
        assert "default_server" not in template.read_text()


# --- Vault files at rest -----------------------------------------------------------------

SHIPPED_PASSWORD = "-ONLY-vault-password.txt"  # LAB-ONLY-..., EXAMPLE-ONLY-...
PLACEHOLDER_MARKS = ("not-secret", "placeholder")
# Where the lab's password may be named: lab tooling and its documentation, never a
# playbook, role, module, ansible.cfg or another environment.
LAB_PASSWORD_USERS = (
    "Makefile",
    "environments/README.md",
    "environments/vault-password.sh",
    "environments/local/",
    "environments/fleet/",  # the fleet lab's environment, a lab one too
    "molecule/",
    "tests/",
    "src/blobshift/lab/",
    "docs/",
    "bench/",
)


def vault_problems(root: Path) -> list[str]:
    """What is wrong with the vault files under root/environments (empty: all is well)."""
    problems = []
    for vault in sorted((root / "environments").rglob("*")):
        if not vault.is_file() or not vault.name.startswith("vault") or "password" in vault.name:
            continue
        rel = vault.relative_to(root)
        if not vault.read_bytes().startswith(b"$ANSIBLE_VAULT;"):
            problems.append(f"{rel} is not encrypted (ansible-vault encrypt {rel})")
            continue
        shipped = sorted(vault.parent.glob("*vault-password*"))
        if not shipped:
            continue
        # Its password is in the repository: only a lab-only/example-only environment
        # may do that, and then its secrets must be placeholders.
        if not all(p.name.endswith(SHIPPED_PASSWORD) for p in shipped):
            problems.append(
                f"{rel}: password file(s) {[p.name for p in shipped]} not marked *-ONLY"
            )
            continue
        # (overrides ansible.cfg's password script, which a copy may not have)
        env = {**os.environ, "ANSIBLE_VAULT_PASSWORD_FILE": str(shipped[0])}
        view = subprocess.run(
            [VENV_BIN / "ansible-vault", "view", str(vault)],
            capture_output=True,
            text=True,
            cwd=root,
            env=env,
        )
        if view.returncode != 0:
            problems.append(f"{rel} does not decrypt with {shipped[0].name}")
            continue
        secret_values = [
            line.split(":", 1)[1].strip()
            for line in view.stdout.splitlines()
            if "_SECRET_KEY:" in line and not line.lstrip().startswith("#")
        ]
        if not secret_values or not all(
            any(mark in v for mark in PLACEHOLDER_MARKS) for v in secret_values
        ):
            problems.append(f"{rel} ships its password but holds non-placeholder secrets")
    return problems


def lab_password_referrers(root: Path) -> list[str]:
    tracked = subprocess.run(
        ["git", "-C", str(root), "grep", "-l", "LAB-ONLY-vault-password"],
        capture_output=True,
        text=True,
    ).stdout.split()
    return [f for f in tracked if not f.startswith(LAB_PASSWORD_USERS)]


@pytest.mark.reliability(
    "Every vault.yml under environments/ is encrypted; only lab-only/example-only ones "
    "ship their password, with placeholder secrets; the lab password only in lab tooling",
    group="Security",
)
def test_vault_files_are_encrypted_and_the_lab_password_stays_in_the_lab(tmp_path, evidence):
    vaults = [p for p in (REPO / "environments").rglob("vault*.yml")]
    assert len(vaults) >= 2
    assert vault_problems(REPO) == []
    assert (REPO / "environments/local/LAB-ONLY-vault-password.txt").is_file()
    assert lab_password_referrers(REPO) == []
    for path in ("ansible.cfg", "playbooks", "roles", "inventories", "environments/example"):
        hits = subprocess.run(
            ["git", "-C", str(REPO), "grep", "-l", "LAB-ONLY", "--", path],
            capture_output=True,
            text=True,
        ).stdout.split()
        assert hits == [], hits

    # The check itself: a clear-text vault, and a shipped password not marked lab-only.
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "environments", copy / "environments", symlinks=True)
    (copy / "environments/prod").mkdir()
    (copy / "environments/prod/vault.yml").write_text("secrets: {RIAKCS_S3_SECRET_KEY: x}\n")
    shutil.copy(
        REPO / "environments/local/vault.yml", copy / "environments/example/vault.yml"
    )  # the lab's vault under the example's password: does not decrypt
    (copy / "environments/staging").mkdir()
    shutil.copy(REPO / "environments/local/vault.yml", copy / "environments/staging/vault.yml")
    shutil.copy(
        REPO / "environments/local/LAB-ONLY-vault-password.txt",
        copy / "environments/staging/vault-password.txt",
    )
    problems = vault_problems(copy)
    assert any("environments/prod/vault.yml is not encrypted" in p for p in problems), problems
    assert any("environments/example/vault.yml does not decrypt" in p for p in problems)
    assert any("environments/staging/vault.yml: password file(s)" in p for p in problems)
    evidence["vault files checked"] = len(vaults)
    evidence["unencrypted"] = 0
    assert len(problems) == 3, problems
    evidence["planted faults detected"] = "3 of 3"
