"""Environments of their own for the tests that drive ansible-playbook.

An `Env` is a copy of the local lab's environment (inventory + public.yml + vault.yml) in
a temporary directory, with its own nginx (ansible_lab.nginx_conf) and ports.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import ansible_lab as lab
import yaml

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent  # the venv running pytest has ansible-core
LAB_PASSWORD = REPO / "environments/local/LAB-ONLY-vault-password.txt"
ENV = "t"
MAIN_PORT, TEMP_PORT = 18180, 18181


OLD_NODE = "lab-old-s3 ansible_host=127.0.0.2 s3_port=19600"
NEW_NODE = "lab-new-s3 ansible_host=127.0.0.3 s3_port=19620"
SECRETS = {
    "RIAKCS_S3_ACCESS_KEY": lab.NEW_KEYS[0],
    "RIAKCS_S3_SECRET_KEY": lab.NEW_KEYS[1],
    "OLD_S3_BLOB_DB_ACCESS_KEY": lab.OLD_KEYS[0],
    "OLD_S3_BLOB_DB_SECRET_KEY": lab.OLD_KEYS[1],
}


_ENCRYPTED: dict[str, str] = {}


@dataclass
class Env:
    """An environment of its own (inventory + public.yml + vault.yml) under `root`."""

    root: Path
    lab_root: Path
    public: dict = field(default_factory=dict)
    riakcs: list[str] = field(default_factory=lambda: [OLD_NODE])
    riakcs_new: list[str] = field(default_factory=list)
    webworkers: list[str] = field(default_factory=lambda: ["lab-app ansible_host=127.0.0.1"])
    secrets: dict = field(default_factory=lambda: dict(SECRETS))
    password_file: Path = LAB_PASSWORD
    # The vault's clear text, when it is not `{secrets: ...}` (malformed-input cases).
    vault_text: str | None = None

    @property
    def inventory(self) -> Path:
        return self.root / "inventories" / ENV

    @property
    def env_dir(self) -> Path:
        return self.root / "environments" / ENV

    @property
    def settings(self) -> Path:
        """The app's own settings file, which includes the blob store settings."""
        return self.lab_root / "app" / "localsettings.py"

    @property
    def blob_settings(self) -> Path:
        """The blob store settings (both stores' secrets), roles/localsettings renders."""
        return self.settings.with_name("blobshift_settings.py")

    @property
    def sites(self) -> Path:
        return self.lab_root / "nginx"

    def set_state(self, state: str) -> None:
        flags = {"steady": (False, False), "migrating": (True, False), "flipping": (False, True)}
        mig, temp = flags[state]
        self.public["localsettings"] = {
            "BLOB_DB_MIGRATING_FROM_S3_TO_S3": mig,
            "TEMP_RIAKCS_PROXY": temp,
        }

    def write(
        self,
        *,
        public_text: str | None = None,
        encrypt: bool = True,
        vault_text: str | None = None,
    ) -> None:
        self.env_dir.mkdir(parents=True, exist_ok=True)
        gv = self.inventory / "group_vars" / "all"
        gv.mkdir(parents=True, exist_ok=True)
        for name in ("public.yml", "vault.yml"):
            link = gv / name
            if not link.is_symlink():
                link.symlink_to(f"../../../../environments/{ENV}/{name}")
        (self.inventory / "hosts.ini").write_text(
            "[proxy]\nlab-proxy ansible_host=127.0.0.1\n\n"
            "[webworkers]\n" + "\n".join(self.webworkers) + "\n\n"
            "[django_manage]\nlab-app\n\n"
            "[riakcs]\n" + "\n".join(self.riakcs) + "\n\n"
            "[riakcs_new]\n" + "\n".join(self.riakcs_new) + "\n\n"
            "[all:vars]\nansible_connection=local\n"
            "ansible_python_interpreter={{ ansible_playbook_python }}\n"
        )
        (self.env_dir / "public.yml").write_text(
            public_text if public_text is not None else yaml.safe_dump(self.public)
        )
        vault = self.env_dir / "vault.yml"
        if vault_text is None:
            vault_text = self.vault_text
        plain = vault_text if vault_text is not None else yaml.safe_dump({"secrets": self.secrets})
        if not encrypt:
            vault.write_text(plain)
            return
        if plain not in _ENCRYPTED:
            vault.write_text(plain)
            subprocess.run(
                [VENV_BIN / "ansible-vault", "encrypt", str(vault)],
                check=True,
                cwd=REPO,
                capture_output=True,
                env={**os.environ, "BLOBSHIFT_VAULT_PASSWORD_FILE": str(LAB_PASSWORD)},
            )
            _ENCRYPTED[plain] = vault.read_text()
        vault.write_text(_ENCRYPTED[plain])

    def play(
        self, playbook: str, *args: str, password_file: Path | None = None, env: dict | None = None
    ) -> subprocess.CompletedProcess:
        run_env = {
            **os.environ,
            "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_NOCOLOR": "1",
            "BLOBSHIFT_VAULT_PASSWORD_FILE": str(password_file or self.password_file),
            **(env or {}),
        }
        run_env.pop("ANSIBLE_CONFIG", None)
        return subprocess.run(
            [
                VENV_BIN / "ansible-playbook",
                "-i",
                str(self.inventory),
                f"playbooks/{playbook}",
                *args,
            ],
            cwd=REPO,
            env={k: v for k, v in run_env.items() if v is not None},
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=180,
            start_new_session=True,
        )

    def rendered(self) -> dict[str, str]:
        """Checksum of every file the playbooks render (sites, links, settings)."""
        out = {}
        for base in (
            self.sites / "sites-available",
            self.sites / "sites-enabled",
            self.settings.parent,
        ):
            if base.is_dir():
                for p in sorted(base.iterdir()):
                    if p.name == "restarts.log":
                        continue
                    data = os.readlink(p).encode() if p.is_symlink() else p.read_bytes()
                    out[str(p)] = hashlib.sha256(data).hexdigest()
        return out

    def nginx_pids(self) -> list[int]:
        """This env's nginx: the master (from its pid file) and its workers."""
        try:
            master = int((self.sites / "nginx.pid").read_text().strip())
        except (OSError, ValueError):
            return []
        pids = [master] if Path(f"/proc/{master}").exists() else []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if pids and int(fields[1]) == master:
                pids.append(int(stat.parent.name))
        return sorted(pids)

    def snapshot(self) -> dict[str, str]:
        """Everything a refused run must leave alone, on every host of this env: the
        rendered files (sites, links, settings), the env's own files, the app's restart
        log and the nginx processes (a reload replaces the workers)."""
        out = dict(self.rendered())
        for p in sorted(self.root.rglob("*")):
            if p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
        restarts = self.settings.parent / "restarts.log"
        out[str(restarts)] = restarts.read_text() if restarts.exists() else ""
        out["nginx processes"] = " ".join(map(str, self.nginx_pids()))
        return out


def base_public(lab_root: Path) -> dict:
    public = yaml.safe_load((REPO / "environments/local/public.yml").read_text())
    ngx = lab_root / "nginx"
    public.update(
        blobshift_env=ENV,
        blobshift_proxy_port=MAIN_PORT,
        blobshift_proxy_temp_port=TEMP_PORT,
        nginx_proxy_conf_dir=str(ngx),
        nginx_proxy_log_dir=str(ngx / "logs"),
        # Not the lab's (environments/local): its flip gate would count these requests.
        nginx_proxy_store_log=str(ngx / "logs" / "blobshift_store.log"),
        nginx_proxy_pid_file=str(ngx / "nginx.pid"),
        localsettings_path=str(lab_root / "app" / "localsettings.py"),
        localsettings_app_restart_commands=[
            f"echo reloaded >> {lab_root / 'app' / 'restarts.log'}"
        ],
    )
    return public


def error_line(result: subprocess.CompletedProcess, fragment: str) -> str:
    """The one output line holding `fragment` (a refusal must fit on one line)."""
    lines = [ln for ln in (result.stdout + result.stderr).splitlines() if fragment in ln]
    assert lines, f"{fragment!r} not on one line of:\n{(result.stdout + result.stderr)[-3000:]}"
    line = lines[0].strip()
    for prefix in ("[ERROR]: ", "Task failed: ", "Action failed: "):
        line = line.removeprefix(prefix)
    return line


def changed_count(result: subprocess.CompletedProcess) -> int:
    """Sum of changed=N over the PLAY RECAP lines (0 if the run never reached a host)."""
    total = 0
    for line in result.stdout.splitlines():
        for word in line.split():
            if word.startswith("changed="):
                total += int(word.split("=", 1)[1])
    return total
