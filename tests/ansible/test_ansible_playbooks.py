"""ansible-playbook runs against environments of their own, with a real nginx.

- every invalid input is refused by every playbook with a message naming the variable and
  the file, before any rendered file changes;
- deploy_proxy.yml --tags=nginx_sites creates and removes the temporary site;
- --check changes nothing and --diff shows the site change;
- a site nginx rejects is restored and nginx is not reloaded;
- secrets never appear in the output, even with -vvv --diff.
"""

from __future__ import annotations

import ast
import re
import socket
import time

import pytest
import yaml
from ansible_env import (
    MAIN_PORT,
    NEW_NODE,
    OLD_NODE,
    REPO,
    SECRETS,
    TEMP_PORT,
    VENV_BIN,
    changed_count,
    error_line,
)

from blobshift.settings import load_settings

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


def set_store(env, which: str, **values):
    env.public[which] = {**env.public[which], **values}


def set_flags(env, mig, temp):
    env.public["localsettings"] = {
        "BLOB_DB_MIGRATING_FROM_S3_TO_S3": mig,
        "TEMP_RIAKCS_PROXY": temp,
    }


def drop_secret(env, name: str, empty: bool = False):
    make_migrating(env)
    if empty:
        env.secrets[name] = ""
    else:
        env.secrets.pop(name)


EXTERNAL = "https://s3.example.com"
P, V, H = "environments/t/public.yml", "environments/t/vault.yml", "inventories/t/hosts.ini"

# Every error the state filter can report (roles/blobshift_state/filter_plugins), each
# reached through a real environment: case -> (mutation, the filter's message template it
# must produce (a unique piece of it), a fragment naming the variable and the file).
# test_every_filter_error_has_a_case keeps this list complete.
BAD = {
    "flag not a boolean": (
        lambda env: set_flags(env, "yes", False),
        "must be true or false, got",
        f"localsettings.BLOB_DB_MIGRATING_FROM_S3_TO_S3 in {P} must be true or false",
    ),
    "both flags": (
        lambda env: set_flags(env, True, True),
        "are both true in",
        "localsettings.BLOB_DB_MIGRATING_FROM_S3_TO_S3 and localsettings.TEMP_RIAKCS_PROXY "
        f"are both true in {P}",
    ),
    "migrating without a new store": (
        lambda env: env.set_state("migrating"),
        "there is no new store",
        "localsettings.BLOB_DB_MIGRATING_FROM_S3_TO_S3 is true but there is no new store: add "
        f"the new cluster's nodes under [riakcs_new] in {H}, or set "
        f"blobshift_new_store.external_url in {P}",
    ),
    "migrating to riakcs_new and an external url": (
        lambda env: (
            make_migrating(env),
            set_store(env, "blobshift_new_store", external_url=EXTERNAL),
        ),
        "the new store is one or the other",
        f"is true with both [riakcs_new] hosts in {H} and blobshift_new_store.external_url in {P}",
    ),
    "flipping with riakcs_new": (
        lambda env: (env.set_state("flipping"), setattr(env, "riakcs_new", [NEW_NODE])),
        "still lists",
        f"localsettings.TEMP_RIAKCS_PROXY is true but [riakcs_new] in {H} still lists",
    ),
    "flipping to an external url": (
        lambda env: (
            env.set_state("flipping"),
            set_store(env, "blobshift_new_store", external_url=EXTERNAL),
        ),
        "only serves a Riak CS flip",
        f"localsettings.TEMP_RIAKCS_PROXY is true with blobshift_new_store.external_url set in {P}",
    ),
    "host in both clusters": (
        lambda env: (make_migrating(env), setattr(env, "riakcs_new", [OLD_NODE])),
        "are in both [riakcs] and [riakcs_new]",
        f"host(s) ['lab-old-s3'] are in both [riakcs] and [riakcs_new] in {H}: a node belongs "
        "to the old or to the new cluster, remove it from the other group",
    ),
    "riakcs empty": (
        lambda env: setattr(env, "riakcs", []),
        "is empty: the proxy's main site",
        f"[riakcs] in {H} is empty",
    ),
    **{
        f"secret {name} missing": (
            lambda env, name=name: drop_secret(env, name),
            "is missing or empty in",
            f"secrets.{name} is missing or empty in {V}: add it (ansible-vault edit)",
        )
        for name in SECRETS
    },
    "secret empty": (
        lambda env: drop_secret(env, "RIAKCS_S3_SECRET_KEY", empty=True),
        "is missing or empty in",
        f"secrets.RIAKCS_S3_SECRET_KEY is missing or empty in {V}",
    ),
    "secrets not a mapping": (
        lambda env: setattr(env, "secrets", "RIAKCS_S3_ACCESS_KEY"),
        "secrets in {} must be a mapping",
        f"secrets in {V} must be a mapping, got a string",
    ),
    "vault without secrets": (
        lambda env: setattr(env, "vault_text", "credentials: {}\n"),
        "(no `secrets:` mapping)",
        f"{V} was not loaded (no `secrets:` mapping): "
        "inventories/t/group_vars/all/vault.yml must point to it",
    ),
    "public without localsettings": (
        lambda env: env.public.pop("localsettings"),
        "(no `localsettings:` mapping)",
        f"{P} was not loaded (no `localsettings:` mapping)",
    ),
    "localsettings not a mapping": (
        lambda env: env.public.update(localsettings=[True]),
        "localsettings in {} must be a mapping",
        f"localsettings in {P} must be a mapping, got a list",
    ),
    "store not a mapping": (
        lambda env: env.public.update(blobshift_new_store="s3.example.com"),
        "{} in {} must be a mapping, got {}",
        f"blobshift_new_store in {P} must be a mapping, got the string 's3.example.com'",
    ),
    "store with an unknown key": (
        lambda env: set_store(env, "blobshift_old_store", endpoint=EXTERNAL),
        "has unknown key(s)",
        f"blobshift_old_store in {P} has unknown key(s) ['endpoint']",
    ),
    "bucket empty": (
        lambda env: set_store(env, "blobshift_new_store", bucket=""),
        "must be a non-empty bucket name",
        f"blobshift_new_store.bucket in {P} must be a non-empty bucket name",
    ),
    "signature version unknown": (
        lambda env: set_store(env, "blobshift_old_store", signature_version="v2"),
        "use 's3' (SigV2, Riak CS) or 's3v4'",
        f"blobshift_old_store.signature_version in {P} is 'v2': use 's3'",
    ),
    "list version unknown": (
        lambda env: set_store(env, "blobshift_new_store", list_version=3),
        "must be 1 (Riak CS) or 2",
        f"blobshift_new_store.list_version in {P} must be 1 (Riak CS) or 2",
    ),
    "dialect unknown": (
        lambda env: set_store(env, "blobshift_old_store", dialect="riak"),
        "use 'riakcs' or ''",
        f"blobshift_old_store.dialect in {P} is 'riak': use 'riakcs' or ''",
    ),
    "pool size zero": (
        lambda env: set_store(env, "blobshift_new_store", max_pool_connections=0),
        "must be a positive integer",
        f"blobshift_new_store.max_pool_connections in {P} must be a positive integer",
    ),
    "verify not a bool or path": (
        lambda env: set_store(env, "blobshift_new_store", verify=5),
        "must be true, false or a CA bundle path",
        f"blobshift_new_store.verify in {P} must be true, false or a CA bundle path",
    ),
    "botocore_config not a mapping": (
        lambda env: set_store(env, "blobshift_new_store", botocore_config="virtual"),
        "botocore_config in {} must be a mapping",
        f"blobshift_new_store.botocore_config in {P} must be a mapping",
    ),
    "external url without a scheme": (
        lambda env: set_store(env, "blobshift_new_store", external_url="s3.example.com"),
        "must start with http:// or https://",
        f"blobshift_new_store.external_url in {P} must start with http:// or https://",
    ),
    "proxy ports equal": (
        lambda env: env.public.update(blobshift_proxy_temp_port=MAIN_PORT),
        "are equal",
        f"blobshift_proxy_port and blobshift_proxy_temp_port in {P} are equal ({MAIN_PORT}): "
        "give the temporary port a number of its own",
    ),
    "settings mode world-readable": (
        lambda env: env.public.update(localsettings_mode="0644"),
        "so others must get no access",
        f"localsettings_mode in {P} is '0644': localsettings.py holds the S3 secret keys, so "
        "others must get no access; use '0640' or '0600'",
    ),
    "settings mode not octal": (
        lambda env: env.public.update(localsettings_mode="u=rw,g=r,o=r"),
        "use a quoted octal mode",
        f"localsettings_mode in {P} is 'u=rw,g=r,o=r': use a quoted octal mode",
    ),
}

BOTH_PLAYBOOKS = {
    "both flags",
    "migrating without a new store",
    "migrating to riakcs_new and an external url",
    "flipping with riakcs_new",
    "flipping to an external url",
    "host in both clusters",
    "riakcs empty",
    "secret OLD_S3_BLOB_DB_SECRET_KEY missing",
}
FILTER = REPO / "roles/blobshift_state/filter_plugins/blobshift_state.py"


def filter_errors() -> dict[str, re.Pattern]:
    """The filter's error messages: template (`{}` for each value) -> full-match regex."""
    out = {}
    for node in ast.walk(ast.parse(FILTER.read_text())):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "append"
            and getattr(node.func.value, "id", None) == "errors"
        ):
            continue
        arg = node.args[0]
        parts = arg.values if isinstance(arg, ast.JoinedStr) else [arg]
        literal = [p.value if isinstance(p, ast.Constant) else None for p in parts]
        template = "".join("{}" if p is None else p for p in literal)
        out[template] = re.compile("".join(".+?" if p is None else re.escape(p) for p in literal))
    return out


def template_of(key: str) -> str:
    found = [t for t in filter_errors() if key in t]
    assert len(found) == 1, f"{key!r} matches {found}: make it unique"
    return found[0]


def test_every_filter_error_has_a_case():
    """Each message of the state filter is produced by at least one playbook case below."""
    covered = {template_of(key) for _, key, _ in BAD.values()}
    assert set(filter_errors()) - covered == set()


@pytest.mark.reliability(
    "An invalid environment is refused by deploy_proxy.yml and update_config.yml: one-line "
    "message naming the variable, the file and the fix, non-zero exit, nothing changed",
    group="Bad input",
)
@pytest.mark.parametrize("case", sorted(BAD))
def test_invalid_environment_is_refused_before_any_change(lab_env, case, evidence):
    converge(lab_env)
    assert lab_env.rendered(), "the valid environment rendered nothing"
    mutate, key, fragment = BAD[case]
    mutate(lab_env)
    lab_env.write()
    before = lab_env.snapshot()
    pattern = filter_errors()[template_of(key)]
    codes = []
    # Both playbooks share the preflight: the state combinations go through both, the
    # single-setting cases through one of them in turn (to keep the run short).
    index = sorted(BAD).index(case)
    playbooks = PLAYBOOKS if case in BOTH_PLAYBOOKS else (PLAYBOOKS[index % 2],)
    for pb in playbooks:
        result = lab_env.play(pb)
        codes.append(result.returncode)
        assert result.returncode != 0, f"{pb} accepted {case}"
        line = error_line(result, "is not a valid migration state, nothing was changed: ")
        assert fragment in line, line
        errors = line.split("nothing was changed: ", 1)[1].split(" | ")
        assert any(pattern.fullmatch(e) for e in errors), (pattern.pattern, errors)
        assert changed_count(result) == 0
        assert "PLAY [Deploy the S3 proxy sites]" not in result.stdout
        assert "PLAY [Update the app's blob store settings]" not in result.stdout
    after = lab_env.snapshot()
    assert after == before
    evidence["message"] = line
    evidence["exits"] = ", ".join(f"{pb} exit {c}" for pb, c in zip(playbooks, codes, strict=True))
    evidence["files and processes unchanged"] = len(after)
    evidence["changed tasks"] = 0


def assert_refused(lab, before, fragment, *, playbooks=PLAYBOOKS, **play_kw) -> tuple[str, str]:
    """Each playbook exits non-zero with `fragment` on one line and changes nothing."""
    codes = []
    for pb in playbooks:
        result = lab.play(pb, **play_kw)
        assert result.returncode != 0, f"{pb} accepted it"
        codes.append(f"{pb} exit {result.returncode}")
        line = error_line(result, fragment)
        assert changed_count(result) == 0
        assert "PLAY [Deploy the S3 proxy sites]" not in result.stdout
        assert "PLAY [Update the app's blob store settings]" not in result.stdout
    assert lab.snapshot() == before
    return line, ", ".join(codes)


@pytest.mark.reliability(
    "Malformed YAML in public.yml: refused naming the file, line and column", group="Bad input"
)
def test_malformed_public_yml_is_refused(lab_env, evidence):
    converge(lab_env)
    lab_env.write(public_text="localsettings:\n  BLOB_DB_MIGRATING_FROM_S3_TO_S3: [true\n")
    before = lab_env.snapshot()
    line, codes = assert_refused(lab_env, before, "is not valid YAML")
    assert "environments/t/public.yml (linked from" in line, line
    assert "at line 3, column 1" in line and "Fix that file; nothing was changed." in line, line
    evidence.update(
        {
            "message": line.replace(f"{lab_env.root}/", ""),
            "exits": codes,
            "files and processes unchanged": len(before),
        }
    )


@pytest.mark.reliability(
    "Malformed YAML inside the encrypted vault.yml: refused naming the file, line and column, "
    "never quoting the decrypted content",
    group="Bad input",
)
def test_malformed_vault_content_is_refused(lab_env, evidence):
    converge(lab_env)
    secret = SECRETS["RIAKCS_S3_SECRET_KEY"]
    lab_env.vault_text = f"secrets:\n  RIAKCS_S3_SECRET_KEY: [{secret}\n  OTHER: x\n"
    lab_env.write()
    before = lab_env.snapshot()
    line, codes = assert_refused(lab_env, before, "decrypts, but its content is not valid YAML")
    assert "environments/t/vault.yml (linked from" in line, line
    assert "Fix it with `ansible-vault edit " in line and "nothing was changed" in line, line
    assert secret not in line
    evidence.update(
        {
            "message": line.replace(f"{lab_env.root}/", ""),
            "exits": codes,
            "files and processes unchanged": len(before),
        }
    )


def _wrong_password(tmp_path):
    wrong = tmp_path / "wrong-password.txt"
    wrong.write_text("not-the-password\n")
    return {"password_file": wrong}


VAULT_PASSWORD_CASES = {
    "wrong password": (
        _wrong_password,
        "could not be decrypted with the vault password given",
        "environments/t/vault.yml",
    ),
    "password file missing": (
        lambda tmp_path: {"password_file": tmp_path / "no-such-password.txt"},
        "is not a readable file: point it to the file holding this environment's vault password",
        "BLOBSHIFT_VAULT_PASSWORD_FILE=",
    ),
    # No password at all (no terminal): the password script says what to set.
    "no password given": (
        lambda tmp_path: {"env": {"BLOBSHIFT_VAULT_PASSWORD_FILE": None}},
        "no vault password: set BLOBSHIFT_VAULT_PASSWORD_FILE",
        "to a file holding it",
    ),
}


@pytest.mark.reliability(
    "A wrong vault password, a missing password file or none at all: refused naming the "
    "file or the variable to set",
    group="Bad input",
)
@pytest.mark.parametrize("case", sorted(VAULT_PASSWORD_CASES))
def test_wrong_or_missing_vault_password_is_refused(lab_env, tmp_path, case, evidence):
    converge(lab_env)
    before = lab_env.snapshot()
    kwargs, fragment, names = VAULT_PASSWORD_CASES[case]
    line, codes = assert_refused(lab_env, before, fragment, **kwargs(tmp_path))
    assert names in line, line
    evidence.update(
        {
            "message": line.replace(f"{lab_env.root}/", ""),
            "exits": codes,
            "files and processes unchanged": len(before),
        }
    )


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


def test_the_proxy_reaches_a_node_on_its_s3_address_not_its_ssh_address(lab_env):
    """A cluster node Ansible reaches on one address serves S3 on another (a storage
    network): the upstream is its s3_address; without one, its ansible_host."""
    converge(lab_env)
    lab_env.riakcs = [OLD_NODE.replace("s3_port=", "s3_address=127.0.0.9 s3_port=")]
    lab_env.write()
    result = ok(lab_env.play("deploy_proxy.yml", "--check", "--diff"))
    assert "+    server 127.0.0.9:19600;" in result.stdout
    assert "-    server 127.0.0.2:19600;" in result.stdout


@pytest.mark.reliability(
    "A proxy setting nginx rejects: the previous sites are restored and nginx is not reloaded",
    group="Bad input",
)
def test_site_rejected_by_nginx_is_restored(lab_env, evidence):
    converge(lab_env)
    before = lab_env.rendered()
    workers = lab_env.nginx_pids()
    lab_env.public["nginx_proxy_client_max_body_size"] = "9Q"
    make_migrating(lab_env)
    lab_env.write()
    result = lab_env.play("deploy_proxy.yml")
    assert result.returncode != 0
    line = error_line(result, "nginx rejected the new proxy sites")
    assert lab_env.rendered() == before
    assert lab_env.nginx_pids() == workers  # not reloaded: the same workers
    assert not listening(TEMP_PORT, False, timeout=0)
    assert listening(MAIN_PORT, True)
    evidence["message"] = line.replace(f"{lab_env.lab_root}/", "")
    evidence["files unchanged"] = len(before)


def test_a_reload_the_master_refuses_fails_the_play(lab_env):
    """Another process holds the temporary port: nginx -t passes (it binds nothing) and the
    reload exits 0, but the master keeps its old sites; the play must fail, naming it."""
    converge(lab_env)
    make_migrating(lab_env)
    lab_env.public["nginx_proxy_answer_retries"] = 2
    lab_env.write()
    squatter = socket.create_server(("127.0.0.1", TEMP_PORT))  # listens, never answers
    try:
        result = lab_env.play("deploy_proxy.yml")
    finally:
        squatter.close()
    assert result.returncode != 0
    text = " ".join(output(result).split())
    assert f"site riakcs_new does not answer HTTP on 127.0.0.1:{TEMP_PORT} after the reload" in text
    assert "nginx kept its old configuration or is not running" in text


@pytest.mark.reliability(
    "No secret in ansible-playbook -vvv output of deploy_proxy.yml and update_config.yml, "
    "in --check --diff runs, in nginx's logs or the rendered sites",
    group="Security",
)
def test_secrets_never_in_output(lab_env, evidence):
    converge(lab_env)
    make_migrating(lab_env)
    lab_env.write()
    # --check --diff first, while every file still has a change to show; then for real.
    runs = [(pb, ("-vvv", "--check", "--diff")) for pb in PLAYBOOKS]
    runs += [(pb, ("-vvv", "--diff")) for pb in PLAYBOOKS]
    results = [ok(lab_env.play(pb, *args)) for pb, args in runs]
    text = "".join(r.stdout + r.stderr for r in results)
    assert "Render the blob store settings" in text and "ESTABLISH LOCAL CONNECTION" in text
    assert "+    listen 127.0.0.1:" in text  # the --diff of the new site was shown
    # The secrets were in play: the rendered settings hold every one of them.
    settings = lab_env.blob_settings.read_text()
    assert all(value in settings for value in SECRETS.values())
    files = [p for p in lab_env.sites.rglob("*") if p.is_file() and p.suffix != ".pid"]
    scanned = text + "".join(p.read_text(errors="replace") for p in files)
    found = {name: scanned.count(value) for name, value in SECRETS.items() if value in scanned}
    assert found == {}
    mode = lab_env.blob_settings.stat().st_mode & 0o777
    assert mode == 0o640
    assert (lab_env.lab_root / "app/restarts.log").read_text().count("reloaded") == 2
    evidence["runs scanned"] = len(runs)
    evidence["bytes of output scanned"] = len(text.encode())
    evidence["nginx files scanned"] = len(files)
    evidence["secrets looked for"] = len(SECRETS)
    evidence["secrets found"] = sum(found.values())


@pytest.mark.reliability(
    "Settings the app's loader rejects (a CA bundle that does not exist): the file is left "
    "alone, the message names the problem and no secret",
    group="Bad input",
)
def test_settings_rejected_by_the_loader_leave_the_file_alone(lab_env, evidence):
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
    assert not any(value in text for value in SECRETS.values())
    evidence["message"] = error_line(result, "was NOT changed").replace(f"{lab_env.lab_root}/", "")
    evidence["files unchanged"] = len(before)


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


def test_update_config_stops_the_rollout_at_a_batch_whose_app_fails_its_health_check(lab_env):
    """web2's app does not come back after its restart: the rollout stops there, web3
    keeps its old settings (none here), and the failure names web2."""
    app = lab_env.lab_root / "apps-health"
    lab_env.webworkers = [f"web{i} ansible_host=127.0.0.1" for i in (1, 2, 3)]
    lab_env.public.update(
        blobshift_update_config_serial=1,
        localsettings_path=f"{app}/{{{{ inventory_hostname }}}}/localsettings.py",
        localsettings_app_health_command="test {{ inventory_hostname }} != web2",
        localsettings_app_health_retries=2,
        localsettings_app_health_delay=0,
    )
    lab_env.write()
    result = lab_env.play("update_config.yml")
    assert result.returncode != 0
    assert "FAILED - RETRYING: [web2]: Run the app's health check command" in result.stdout
    assert "fatal: [web2]" in result.stdout, result.stdout[-3000:]
    assert (app / "web1" / "localsettings.py").exists()
    assert (app / "web2" / "localsettings.py").exists()
    assert not (app / "web3" / "localsettings.py").exists()


def test_the_app_keeps_its_own_settings_file_and_the_engine_never_runs_it(lab_env):
    """A real app's settings file holds its database, its imports: update_config.yml keeps
    all of it and adds one marked block that runs the blob store settings, which go to a
    file of their own; the engine's settings are that file, so it never runs the app's."""
    converge(lab_env)
    app_own = (
        "import this_module_exists_only_in_the_app  # the app's own code\n"
        'DATABASES = {"default": {"NAME": "app"}}\n'
    )
    block = lab_env.settings.read_text()
    lab_env.settings.write_text(app_own + block)
    try:
        _check_app_file_kept(lab_env, app_own)
    finally:
        lab_env.settings.write_text(block)  # the converged file, for the next test


def _check_app_file_kept(lab_env, app_own: str) -> None:
    make_migrating(lab_env)
    lab_env.write()
    ok(lab_env.play("update_config.yml"))
    text = lab_env.settings.read_text()
    assert text.startswith(app_own)
    assert text.count("# BEGIN blobshift: the blob store settings") == 1
    assert not any(value in text for value in SECRETS.values())  # only in the blob file
    settings = load_settings(lab_env.blob_settings)
    assert settings.migrating and settings.old is not None
    # The app's file, run as the app would, gets the same settings through the block.
    namespace: dict = {}
    code = text.replace("import this_module_exists_only_in_the_app", "pass")
    exec(compile(code, str(lab_env.settings), "exec"), namespace)
    assert namespace["BLOB_DB_MIGRATING_FROM_S3_TO_S3"] is True
    assert namespace["DATABASES"] == {"default": {"NAME": "app"}}
    assert changed_count(ok(lab_env.play("update_config.yml"))) == 0
