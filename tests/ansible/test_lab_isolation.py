"""The playbook tests' and molecule's environments write no file of the local lab's.

`make test` runs the lab's runbook beside tests/ansible and the molecule scenarios. Each
copies environments/local/public.yml and moves the proxy's and the app's files under a
root of its own; a path left at the lab's would mix their requests into the lab's files
(the proxy's store log: the lab's flip gate then counts their reads as fallbacks).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from ansible_env import REPO, base_public

MOLECULE_ROOT = Path("/tmp/blobshift-molecule")
# The variables deploy_proxy.yml and update_config.yml give the roles.
ROLE_PREFIXES = ("nginx_proxy_", "localsettings_")
_ABSOLUTE = re.compile(r"(?<![\w.}])/[\w.-][\w./-]*")


def paths_outside(public: dict, root: Path) -> dict[str, list[str]]:
    """The roles' variables naming an absolute path that is not under root."""
    out: dict[str, list[str]] = {}
    for name, value in public.items():
        if not name.startswith(ROLE_PREFIXES):
            continue
        texts = value if isinstance(value, list) else [value]
        found = [p for t in texts if isinstance(t, str) for p in _ABSOLUTE.findall(t)]
        outside = [p for p in found if not Path(p).is_relative_to(root)]
        if outside:
            out[name] = outside
    return out


def molecule_public() -> dict:
    public = yaml.safe_load((REPO / "environments/local/public.yml").read_text())
    public.update(yaml.safe_load((REPO / "molecule/shared/molecule-lab.yml").read_text()))
    return public


@pytest.mark.parametrize("which", ["tests/ansible", "molecule"])
def test_roles_write_only_under_their_own_root(which: str, tmp_path: Path) -> None:
    if which == "molecule":
        public, root = molecule_public(), MOLECULE_ROOT
    else:
        public, root = base_public(tmp_path), tmp_path
    assert paths_outside(public, root) == {}


def test_the_check_sees_a_path_left_at_the_labs() -> None:
    public = {
        "nginx_proxy_store_log": "/var/log/nginx/blobshift_store.log",
        "localsettings_app_restart_commands": ["echo x >> /tmp/blobshift-molecule/app/r.log"],
        "blob_migration_log_dir": "/var/lib/blobshift-lab/migration-logs",  # not the roles'
    }
    assert paths_outside(public, MOLECULE_ROOT) == {
        "nginx_proxy_store_log": ["/var/log/nginx/blobshift_store.log"]
    }
