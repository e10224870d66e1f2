"""Environment edits for the runbook phases: comments and order kept, wrong states refused."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from blobshift.envedit import EnvEditError, Inventory, git_dirty, plan, write_atomic

HOSTS = """\
# the lab inventory
[proxy]
p1 ansible_host=127.0.0.1

[riakcs]
# old cluster
old1 ansible_host=10.0.0.1
old2 ansible_host=10.0.0.2

[riakcs_new]
# new cluster, until the flip
new1 ansible_host=10.0.1.1

[webworkers]
w1
"""

PUBLIC = """\
---
# env comment
blobshift_env: test
localsettings:
  # the flag
  BLOB_DB_MIGRATING_FROM_S3_TO_S3: false   # set by the phases
  TEMP_RIAKCS_PROXY: false

blobshift_new_store:
  bucket: blobdb
  external_url: ""
"""
P = Path("environments/test/public.yml")


def apply(transition, hosts, public, url=""):
    edit = plan(transition, hosts, public, P, url)
    return edit, edit.hosts_after, edit.public_after


def flags(public):
    return yaml.safe_load(public)["localsettings"]


def test_full_riakcs_cycle_keeps_comments_and_order():
    e1, h1, p1 = apply("start", HOSTS, PUBLIC)
    assert (e1.from_state, e1.to_state) == ("steady", "migrating_riakcs")
    assert h1 == HOSTS
    assert flags(p1) == {"BLOB_DB_MIGRATING_FROM_S3_TO_S3": True, "TEMP_RIAKCS_PROXY": False}
    assert "# the flag" in p1 and "# set by the phases" in p1 and "# env comment" in p1
    assert p1.replace("true", "false", 1) == PUBLIC

    e2, h2, p2 = apply("flip", h1, p1)
    assert e2.to_state == "flipping"
    inv = Inventory.parse(h2)
    assert inv.hosts("riakcs") == ["new1 ansible_host=10.0.1.1"]
    assert inv.hosts("riakcs_new") == []
    assert inv.hosts("riakcs_retired") == [
        "old1 ansible_host=10.0.0.1",
        "old2 ansible_host=10.0.0.2",
    ]
    assert "# old cluster" in h2 and "# new cluster, until the flip" in h2
    assert flags(p2) == {"BLOB_DB_MIGRATING_FROM_S3_TO_S3": False, "TEMP_RIAKCS_PROXY": True}

    back, hb, _ = apply("unflip", h2, p2)
    assert back.to_state == "migrating_riakcs"
    assert Inventory.parse(hb).hosts("riakcs") == Inventory.parse(HOSTS).hosts("riakcs")
    assert Inventory.parse(hb).hosts("riakcs_new") == ["new1 ansible_host=10.0.1.1"]

    e3, h3, p3 = apply("finish", h2, p2)
    assert e3.to_state == "steady" and h3 == h2
    assert flags(p3) == {"BLOB_DB_MIGRATING_FROM_S3_TO_S3": False, "TEMP_RIAKCS_PROXY": False}


def test_external_store_cycle_and_abort():
    no_new = HOSTS.replace("new1 ansible_host=10.0.1.1\n", "")
    e1, h1, p1 = apply("start", no_new, PUBLIC, "https://s3.example.com")
    assert e1.to_state == "migrating_external"
    e2, h2, _ = apply("flip", h1, p1)
    assert e2.to_state == "steady_external" and h2 == no_new
    ea, _, pa = apply("abort", h1, p1)
    assert ea.to_state == "steady"
    assert yaml.safe_load(pa)["blobshift_new_store"]["external_url"] == ""
    assert "was https://s3.example.com before the rollback" in pa


@pytest.mark.parametrize(
    ("transition", "hosts", "public", "message"),
    [
        ("flip", HOSTS, PUBLIC, "'flip' applies to state(s)"),
        ("finish", HOSTS, PUBLIC, "the files say 'steady'"),
        ("start", HOSTS.replace("new1 ansible_host=10.0.1.1\n", ""), PUBLIC, "no new store"),
        ("start", HOSTS, "localsettings: [1, 2]\n", "must be a mapping"),
        ("start", HOSTS, "localsettings:\n  a: [\n", "is not valid YAML"),
        ("jump", HOSTS, PUBLIC, "unknown transition"),
    ],
)
def test_refusals(transition, hosts, public, message):
    with pytest.raises(EnvEditError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan(transition, hosts, public, P)


def test_missing_flag_line_is_added_under_localsettings():
    public = PUBLIC.replace("  TEMP_RIAKCS_PROXY: false\n", "")
    _, _, p1 = apply("start", HOSTS, public)
    _, _, p2 = apply("flip", HOSTS, p1.replace("[riakcs_new]", "[riakcs_new]"))
    assert flags(p2)["TEMP_RIAKCS_PROXY"] is True


def test_git_dirty_tells_uncommitted_edits(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    public = tmp_path / "public.yml"
    public.write_text(PUBLIC)
    git("add", "public.yml")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "env")
    assert git_dirty(public) is False
    public.write_text(PUBLIC + "# an operator's edit, not committed\n")
    assert git_dirty(public) is True
    outside = tmp_path.parent / "not-in-git.yml"
    outside.write_text(PUBLIC)
    assert git_dirty(outside) is False


def test_a_git_failure_is_never_read_as_clean(tmp_path):
    # A checkout owned by another user: git refuses it ("dubious ownership"); that must
    # stop the edit, not pass as "nothing uncommitted".
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    public = tmp_path / "public.yml"
    public.write_text(PUBLIC)
    if os.getuid() != 0:
        pytest.skip("needs root to give the checkout to another user")
    os.chown(tmp_path, 12345, 12345)
    os.chown(tmp_path / ".git", 12345, 12345)
    with pytest.raises(EnvEditError, match=r"git status of .*public.yml failed \(.*dubious"):
        git_dirty(public)


def test_write_atomic_keeps_the_owner_and_mode(tmp_path):
    public = tmp_path / "public.yml"
    public.write_text(PUBLIC)
    public.chmod(0o640)
    if os.getuid() != 0:
        pytest.skip("needs root to give the file to another user")
    os.chown(public, 12345, 12346)
    write_atomic(public, PUBLIC + "# edited\n")
    st = public.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (12345, 12346, 0o640)
    assert public.read_text().endswith("# edited\n")
