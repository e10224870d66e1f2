#!/usr/bin/python
# Copyright: blobshift contributors
# Apache-2.0 (see the project's licence)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: blob_log_check
short_description: Classify the blobs a backfill logged as missing (blobshift check-blob-logs)
description:
  - Reads the missing-blob logs of a backfill (JSON lines written by M(blob_migration)) and
    classifies every logged blob, in this order, as C(Found in new db), C(Found in old db),
    C(Not referenced) (absent from the current manifest O(keys_from), deleted while the
    backfill ran) or C(Not found).
  - With O(migrate=true), copies the C(Found in old db) blobs to the new store now.
  - Reads both stores' settings and credentials from the app's settings file on the host;
    secrets never pass through the module's arguments.
  - Runs the engine in-process, so run the task with the interpreter of the virtualenv of
    roles/blobshift_engine.
version_added: "0.1.0"
author:
  - blobshift contributors
options:
  settings:
    description: Path of the app's C(localsettings.py) on the host (both stores).
    type: path
    required: true
  logs:
    description: Missing-blob log files to check, on the host.
    type: list
    elements: path
    required: true
  migrate:
    description:
      - Copy the C(Found in old db) blobs to the new store. Not done in check mode.
    type: bool
    default: false
  num_workers:
    description: Concurrent lookups (and copies).
    type: int
    default: 15
  keys_from:
    description:
      - The current manifest (JSON lines with C(blob_key)); a logged key absent from it
        is C(Not referenced). Without it, no blob is classified C(Not referenced).
    type: path
  metrics_file:
    description:
      - Keep the run's metrics in this file, in Prometheus' text format (the C(blobshift_*)
        families listed in the README's Metrics section), replaced whole every few seconds
        and once at the end, for node_exporter's textfile collector (its directory on Debian
        is C(/var/lib/prometheus/node-exporter)). The name must end in C(.prom) and its
        directory must exist.
      - Not written in check mode.
    type: path
notes:
  - Check mode classifies (read-only) and reports RV(would_migrate); it copies nothing.
  - C(changed) is true only when blobs were migrated.
  - The task fails when the settings are unusable, a store fails its preflight, a log is
    missing, or a requested migration of a blob failed. Remaining C(Not found) or
    C(Found in old db) blobs do not fail the task; see RV(clean).
seealso:
  - module: blob_migration
requirements:
  - blobshift (installed by roles/blobshift_engine) in the interpreter running the module
"""

EXAMPLES = r"""
- name: Classify the blobs logged by the backfill and copy those still in the old store
  blob_log_check:
    settings: /etc/app/localsettings.py
    logs:
      - /opt/blobshift/blob-migration-logs/migrate_backend-blob-migration-20261124T010203Z.txt
    migrate: true
  vars:
    ansible_python_interpreter: /opt/blobshift/venv/bin/python
  register: checked

- name: Show what is left
  ansible.builtin.debug:
    var: checked.totals
"""

RETURN = r"""
records:
  description: Log records read.
  returned: success
  type: int
  sample: 12
malformed:
  description: Log lines that were not valid records (skipped, not fatal).
  returned: success
  type: int
  sample: 0
by_type:
  description:
    - Per blob type (C(type_code) of the record, C((no type)) without one), the count
      of each category.
  returned: success
  type: dict
  sample:
    "(no type)": {"Found in new db": 3, "Found in old db": 5, "Not referenced": 0, "Not found": 1}
totals:
  description: The count of each category over every type.
  returned: success
  type: dict
  sample: {"Found in new db": 3, "Found in old db": 5, "Not referenced": 0, "Not found": 1}
migrated:
  description: C(Found in old db) blobs copied to the new store by this run.
  returned: success
  type: int
  sample: 5
migrate_failed:
  description: C(Found in old db) blobs whose copy failed.
  returned: success
  type: int
would_migrate:
  description: In check mode with O(migrate=true), the blobs a real run would copy.
  returned: check mode
  type: int
left_in_old:
  description: C(Found in old db) blobs not migrated (still only in the old store).
  returned: success
  type: int
not_found_keys:
  description: Keys classified C(Not found) (in neither store).
  returned: success
  type: list
  elements: str
clean:
  description: True when no blob is C(Not found) and none is left only in the old store.
  returned: success
  type: bool
exit_code:
  description: The exit code the CLI would have returned (0 clean, 1 blobs remain).
  returned: always
  type: int
output:
  description: The engine's messages (last 200 lines).
  returned: always
  type: list
  elements: str
"""

import os
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.blobshift_common import (
    HAS_ENGINE,
    capture_output,
    load_engine_settings,
    output_lines,
    require_engine,
    run_engine,
)

if HAS_ENGINE:
    from blobshift.checklogs import FOUND_OLD, NOT_FOUND, check_blob_logs
    from blobshift.metrics import check_metrics_path

ARGUMENT_SPEC = dict(
    settings=dict(type="path", required=True),
    logs=dict(type="list", elements="path", required=True),
    migrate=dict(type="bool", default=False),
    num_workers=dict(type="int", default=15),
    keys_from=dict(type="path"),
    metrics_file=dict(type="path"),
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    require_engine(module)
    p = module.params
    if not p["logs"]:
        module.fail_json(msg="logs is empty: give at least one missing-blob log file")
    if p["num_workers"] < 1:
        module.fail_json(msg=f"num_workers={p['num_workers']}: must be at least 1")
    missing = [log for log in p["logs"] if not os.path.isfile(log)]
    if missing:
        module.fail_json(msg=f"missing-blob log(s) not found on this host: {missing}")
    unreadable = [log for log in p["logs"] if not os.access(log, os.R_OK)]
    if unreadable:
        module.fail_json(msg=f"missing-blob log(s) not readable by uid {os.getuid()}: {unreadable}")
    if p["keys_from"] is not None and not os.path.isfile(p["keys_from"]):
        module.fail_json(msg=f"keys_from {p['keys_from']}: no such manifest file on this host")
    if p["metrics_file"] and (why := check_metrics_path(Path(p["metrics_file"]), "metrics_file")):
        module.fail_json(msg=why)
    settings = load_engine_settings(module, p["settings"])
    migrate = p["migrate"] and not module.check_mode
    out = capture_output()
    result = run_engine(
        module,
        f"check of {len(p['logs'])} missing-blob log(s) with {p['settings']}",
        check_blob_logs(
            settings,
            [Path(log) for log in p["logs"]],
            migrate=migrate,
            num_workers=p["num_workers"],
            keys_from=Path(p["keys_from"]) if p["keys_from"] else None,
            out=out,
            metrics_file=None
            if module.check_mode or not p["metrics_file"]
            else Path(p["metrics_file"]),
        ),
        out,
    )
    ret = result.as_dict()
    left_in_old = result.total(FOUND_OLD) - result.migrated
    ret.update(
        left_in_old=left_in_old,
        clean=result.exit_code == 0,
        exit_code=result.exit_code,
        output=output_lines(out),
    )
    if module.check_mode and p["migrate"]:
        ret["would_migrate"] = result.total(FOUND_OLD)
    changed = result.migrated > 0
    if result.migrate_failed:
        module.fail_json(
            msg=(
                f"{result.migrate_failed} 'Found in old db' blob(s) could not be copied to the "
                "new store (see output); run the check again to retry them"
            ),
            changed=changed,
            **ret,
        )
    if result.total(NOT_FOUND):
        module.warn(
            f"{result.total(NOT_FOUND)} logged blob(s) are in neither store (Not found): "
            "see not_found_keys"
        )
    module.exit_json(changed=changed, **ret)


if __name__ == "__main__":
    main()
