"""Shared code of the tests of library/ (the blob_* modules) and of the backfill playbooks.

Two real SeaweedFS S3 servers of their own (127.0.0.2 and 127.0.0.3, base ports 19700
and 19720, or $BLOBSHIFT_MODULES_TEST_PORT and +20), the engine installed by
roles/blobshift_engine into a virtualenv of the session, and for each test an inventory
with two django_manage hosts on this machine (dm1, dm2: two shards, each its own log dir).

Not named conftest.py: pytest imports every conftest.py as `conftest`, so tests could not
import from one reliably.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import ansible.module_utils
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
VENV_BIN = REPO / ".venv" / "bin"
LAB_PASSWORD = REPO / "environments/local/LAB-ONLY-vault-password.txt"
OLD_IP, NEW_IP = "127.0.0.2", "127.0.0.3"
BASE_PORT = int(os.environ.get("BLOBSHIFT_MODULES_TEST_PORT", "19700"))
OLD_KEYS = ("MODOLDACCESSKEY", "mod-old-secret-never-in-output-51d2")
NEW_KEYS = ("MODNEWACCESSKEY", "mod-new-secret-never-in-output-8e47")

# The modules import `ansible.module_utils.blobshift_common`: make the repository's
# module_utils/ part of that package, as AnsiballZ does on a host.
if str(REPO / "module_utils") not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(str(REPO / "module_utils"))
sys.path.insert(0, str(HERE.parent))  # tests/helpers.py


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# store_dict / write_settings of the engine tests (tests/conftest.py), loaded by path
# under a name of its own (see above).
engine_conftest = _load("blobshift_engine_test_conftest", REPO / "tests" / "conftest.py")
store_dict = engine_conftest.store_dict
write_settings = engine_conftest.write_settings


def load_module(name: str):
    """A module of library/ as a Python module (for unit tests)."""
    return _load(f"blobshift_library_{name}", REPO / "library" / f"{name}.py")


@dataclass
class Inventory:
    """An inventory for the backfill playbooks: dm1 and dm2 in django_manage, on this host."""

    root: Path
    settings: Path
    engine_venv: Path
    async_dir: Path
    extra: dict

    @property
    def path(self) -> Path:
        return self.root / "inventory"

    def log_dir(self, host: str) -> Path:
        return self.root / f"logs-{host}"

    @property
    def fetch_dir(self) -> Path:
        return self.root / "controller-runs"

    def write(self) -> None:
        inv = self.path
        (inv / "group_vars").mkdir(parents=True, exist_ok=True)
        (inv / "host_vars").mkdir(exist_ok=True)
        (inv / "hosts.ini").write_text(
            "# Test inventory of tests/modules: two django_manage hosts on this machine.\n"
            "[django_manage]\ndm1\ndm2\n\n"
            f"[riakcs]\nmod-old-s3 ansible_host={OLD_IP} s3_port={BASE_PORT}\n\n"
            f"[riakcs_new]\nmod-new-s3 ansible_host={NEW_IP} s3_port={BASE_PORT + 20}\n\n"
            "[all:vars]\nansible_connection=local\n"
            "ansible_python_interpreter={{ ansible_playbook_python }}\n"
        )
        group_vars = {
            # The state derivation (roles/blobshift_state): migrating to a Riak CS cluster.
            "blobshift_env": "modtest",
            "localsettings": {
                "BLOB_DB_MIGRATING_FROM_S3_TO_S3": True,
                "TEMP_RIAKCS_PROXY": False,
            },
            "blobshift_new_store": {"bucket": "blobdb"},
            "blobshift_old_store": {"bucket": "blobdb", "signature_version": "s3"},
            # Only checked for presence by the state derivation; the engine reads the
            # real (test) keys from the settings file written by the test.
            "secrets": {
                "RIAKCS_S3_ACCESS_KEY": "unused",
                "RIAKCS_S3_SECRET_KEY": "unused",
                "OLD_S3_BLOB_DB_ACCESS_KEY": "unused",
                "OLD_S3_BLOB_DB_SECRET_KEY": "unused",
            },
            "blob_migration_settings": str(self.settings),
            # Each poll is a module run per shard (CPU the other lanes share): every 2 s.
            "blob_migration_poll_delay": 2,
            # SeaweedFS fails the key probe for "a//b" and "x/": log such keys (as the lab).
            "blob_migration_log_unfaithful_keys": True,
            "blob_migration_min_free_mb": 10,
            # Not this machine's node_exporter directory: the tests write no metrics there.
            "blob_migration_textfile_dir": str(self.root / "no-textfile-dir"),
            # The controller's copies of the hosts' run files and reports.
            "blobshift_fetch_dir": str(self.fetch_dir),
            "blobshift_engine_venv": str(self.engine_venv),
            "blobshift_engine_python": sys.executable,
            "blobshift_engine_build_dir": str(self.engine_venv.parent / "wheels"),
            **self.extra,
        }
        (inv / "group_vars" / "all.yml").write_text(yaml.safe_dump(group_vars))
        for host in ("dm1", "dm2"):
            (inv / "host_vars" / f"{host}.yml").write_text(
                yaml.safe_dump({"blob_migration_log_dir": str(self.log_dir(host))})
            )

    def play(self, playbook: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
        env = {
            **os.environ,
            "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
            "ANSIBLE_ASYNC_DIR": str(self.async_dir),
            "BLOBSHIFT_VAULT_PASSWORD_FILE": str(LAB_PASSWORD),
        }
        env.pop("ANSIBLE_CONFIG", None)
        path = playbook if "/" in playbook else f"playbooks/{playbook}"
        return subprocess.run(
            [str(VENV_BIN / "ansible-playbook"), "-i", str(self.path), path, *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            start_new_session=True,
        )


def show(result: subprocess.CompletedProcess) -> str:
    return f"rc={result.returncode}\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
