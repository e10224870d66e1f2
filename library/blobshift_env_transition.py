#!/usr/bin/python
# Copyright: blobshift contributors
# Apache-2.0 (see the project's licence)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: blobshift_env_transition
short_description: Edit an environment's inventory and public.yml for a runbook phase
description:
  - Applies one transition of the migration's state machine to the environment's own
    files, on the controller, the way an operator would edit them by hand (the
    C(localsettings) flags and C(blobshift_new_store.external_url) in C(public.yml), the
    C([riakcs]), C([riakcs_new]) and C([riakcs_retired]) groups in the inventory).
  - Edits are made in place, line by line, so comments and order are kept; the result is
    parsed again and must land in the expected state before anything is written.
  - Refuses a file with uncommitted changes in git (unless O(allow_dirty)), a starting
    state the transition does not apply to, and files that changed since the playbook
    derived the state (O(expected_state)).
version_added: "0.1.0"
author:
  - blobshift contributors
options:
  transition:
    description:
      - C(start) (steady to migrating), C(flip) (migrating to flipping, or to the external
        store for good), C(finish) (flipping to done), C(abort) (migrating back to steady),
        C(unflip) (flipping back to migrating).
    type: str
    required: true
    choices: [start, flip, finish, abort, unflip]
  hosts_file:
    description: The environment's inventory file (C(inventories/<env>/hosts.ini)).
    type: path
    required: true
  public_file:
    description:
      - The environment's C(public.yml); a symlink is followed and stays a symlink.
    type: path
    required: true
  expected_state:
    description:
      - The state the playbook derived when it started; the files must still say so.
    type: str
  external_url:
    description:
      - With O(transition=start) towards an external store (Amazon S3), its URL, set
        together with the migrating flag.
    type: str
    default: ""
  allow_dirty:
    description: Edit files even when they have uncommitted changes in git.
    type: bool
    default: false
notes:
  - Supports check mode and diff mode; in check mode nothing is written.
"""

EXAMPLES = r"""
- name: Set the migrating flag
  blobshift_env_transition:
    transition: start
    hosts_file: "{{ inventory_dir }}/hosts.ini"
    public_file: "{{ inventory_dir }}/group_vars/all/public.yml"
    expected_state: steady
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
from_state:
  description: The state the files were in.
  returned: always
  type: str
  sample: migrating_riakcs
to_state:
  description: The state the files are in after the edit.
  returned: always
  type: str
  sample: flipping
"""

import traceback
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from blobshift.envedit import EnvEditError, git_dirty, plan, write_atomic
except ImportError:
    ENGINE_ERROR: str | None = traceback.format_exc()
else:
    ENGINE_ERROR = None


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "transition": {
                "type": "str",
                "required": True,
                "choices": ["start", "flip", "finish", "abort", "unflip"],
            },
            "hosts_file": {"type": "path", "required": True},
            "public_file": {"type": "path", "required": True},
            "expected_state": {"type": "str"},
            "external_url": {"type": "str", "default": ""},
            "allow_dirty": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    if ENGINE_ERROR is not None:
        module.fail_json(msg=missing_required_lib("blobshift"), exception=ENGINE_ERROR)
    p = module.params
    hosts, public = Path(p["hosts_file"]), Path(p["public_file"])
    for path in (hosts, public):
        if not path.is_file():
            module.fail_json(msg=f"{path}: no such file")
    try:
        edit = plan(
            p["transition"],
            hosts.read_text(encoding="utf-8"),
            public.read_text(encoding="utf-8"),
            public,
            p["external_url"],
        )
    except EnvEditError as exc:
        module.fail_json(msg=f"{hosts} / {public}: {exc}; nothing was changed")
    expected = p["expected_state"]
    if expected and edit.from_state != expected:
        module.fail_json(
            msg=f"{hosts} / {public} say '{edit.from_state}' but the playbook derived "
            f"'{expected}' when it started: the files changed meanwhile, run it again"
        )
    changes = [
        (hosts, edit.hosts_before, edit.hosts_after),
        (public, edit.public_before, edit.public_after),
    ]
    changes = [c for c in changes if c[1] != c[2]]
    if not p["allow_dirty"]:
        for path, _, _ in changes:
            try:
                dirty = git_dirty(path)
            except EnvEditError as exc:
                module.fail_json(msg=f"{exc}; nothing was changed")
            if dirty:
                module.fail_json(
                    msg=f"{path} has uncommitted changes: commit or stash them so that this "
                    "edit can be reviewed on its own (or pass allow_dirty), nothing was changed"
                )
    diff = [
        {"before_header": str(path), "after_header": str(path), "before": a, "after": b}
        for path, a, b in changes
    ]
    if changes and not module.check_mode:
        for path, _, after in changes:
            write_atomic(path, after)
    module.exit_json(
        changed=bool(changes),
        diff=diff,
        from_state=edit.from_state,
        to_state=edit.to_state,
    )


if __name__ == "__main__":
    main()
