"""Fixtures for the tests that drive ansible-playbook (the Ansible side of blobshift).

These tests are run by `make test-ansible` (BLOBSHIFT_ANSIBLE_TESTS=1); the top-level
pytest run skips them so they do not run twice.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import ansible_lab as lab
import pytest
from ansible_env import OLD_NODE, SECRETS, Env, base_public

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    if os.environ.get("BLOBSHIFT_ANSIBLE_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="Ansible tests: run with `make test-ansible`")
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def converged_env(tmp_path_factory):
    """An environment with an nginx of its own, converged in the steady state once per module."""
    tmp = tmp_path_factory.mktemp("ansible-env")
    lab_root = tmp / "lab"
    lab.nginx_conf(lab_root)
    env = Env(root=tmp / "repo", lab_root=lab_root, public=base_public(lab_root))
    env.set_state("steady")
    env.write()
    for pb in ("deploy_proxy.yml", "update_config.yml"):
        result = env.play(pb)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    env.baseline = env.rendered()
    yield env
    lab.stop(lab_root)
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def lab_env(converged_env):
    """The module's environment, reset to the converged steady state for each test."""
    env = converged_env
    env.public = base_public(env.lab_root)
    env.set_state("steady")
    env.riakcs, env.riakcs_new, env.secrets = [OLD_NODE], [], dict(SECRETS)
    env.vault_text = None
    env.webworkers = ["lab-app ansible_host=127.0.0.1"]
    env.write()
    if env.rendered() != env.baseline:
        for pb in ("deploy_proxy.yml", "update_config.yml"):
            result = env.play(pb)
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert env.rendered() == env.baseline
    return env
