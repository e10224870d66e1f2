#!/usr/bin/python
# Copyright: blobshift contributors
# Apache-2.0 (see the project's licence)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: blob_migration_verify
short_description: Prove every blob of the old store is in the new one, intact (verify)
description:
  - Runs C(blobshift verify) on the host; one ordered pass over both buckets finds the
    blobs missing in the new store and those whose size or ETag (or, with
    O(checksum=true), content) differs.
  - Fails the task unless the result is clean, or every missing blob is listed in
    O(accept_missing) / O(accept_missing_file) (a remainder the operator accepts as lost;
    it is listed in the report). This is the gate of the flip.
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
  report:
    description:
      - Write the JSON report to this path on the host (its directory is created).
        Not written in check mode.
    type: path
  checksum:
    description:
      - Download both sides of the objects whose ETags cannot be compared (multipart
        uploads) and compare their MD5s. Slower; without it such objects are compared by
        size only (RV(report.size_only)).
    type: bool
    default: false
  metadata:
    description:
      - Also compare the headers that describe each object (content type, encoding,
        disposition, cache control, user metadata), one HEAD per side and object; a
        difference is listed in RV(report.metadata_mismatch).
    type: bool
    default: false
  prefix:
    description: Only keys that start with this prefix.
    type: str
    default: ""
  num_workers:
    description: Concurrent lookups and downloads.
    type: int
    default: 8
  accept_missing:
    description:
      - Keys the operator accepts as lost. Missing blobs listed here do not fail the task;
        they are reported in RV(report.accepted).
    type: list
    elements: str
    default: []
  accept_missing_file:
    description:
      - A file on the host with more keys accepted as lost, one per line or JSON lines
        with C(blob_key) (e.g. a missing-blob log); C(#) comments allowed.
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
  - The module only reads the stores. C(changed) is true when it wrote O(report).
  - Supports check mode (the same comparison; the report file is not written).
seealso:
  - module: blob_migration
  - module: blob_log_check
requirements:
  - blobshift (installed by roles/blobshift_engine) in the interpreter running the module
"""

EXAMPLES = r"""
- name: Verify the backfill before the flip; fail unless clean
  blob_migration_verify:
    settings: /etc/app/localsettings.py
    report: /opt/blobshift/blob-migration-logs/verify-report.json
    checksum: true
  vars:
    ansible_python_interpreter: /opt/blobshift/venv/bin/python
  register: verified

- name: Accept two blobs known to be lost
  blob_migration_verify:
    settings: /etc/app/localsettings.py
    accept_missing:
      - form/1234/attachment.bin
      - form/5678/attachment.bin
"""

RETURN = r"""
clean:
  description: True when nothing is missing or different (accepted keys excepted).
  returned: always
  type: bool
problems:
  description: Missing, size, ETag and content mismatches left (accepted keys excepted).
  returned: always
  type: int
  sample: 0
report:
  description: The verification report.
  returned: always
  type: dict
  contains:
    old_objects:
      description: Objects listed in the old store.
      type: int
    new_objects:
      description: Objects listed in the new store.
      type: int
    matched:
      description: Objects with equal size and ETag (MD5) on both sides.
      type: int
    matched_by_content:
      description: Objects compared by downloaded content (O(checksum)) and equal.
      type: int
    size_only:
      description: Objects with a multipart ETag, compared by size only.
      type: int
    extra_in_new:
      description: Objects only in the new store (new writes of the app).
      type: int
    deleted_during_pass:
      description: Objects the app deleted from both stores during the pass.
      type: int
    missing:
      description: Keys in the old store and not in the new one (not accepted).
      type: list
      elements: str
    size_mismatch:
      description: Keys whose sizes differ.
      type: list
      elements: str
    etag_mismatch:
      description: Keys whose MD5 ETags differ.
      type: list
      elements: str
    content_mismatch:
      description: Keys whose downloaded contents differ.
      type: list
      elements: str
    metadata_mismatch:
      description: Keys whose describing headers differ (with O(metadata)).
      type: list
      elements: str
    accepted:
      description: Missing keys the operator accepted as lost.
      type: list
      elements: str
  sample: {old_objects: 5000, new_objects: 5012, matched: 5000, missing: [], accepted: []}
report_path:
  description: Where the report was written on the host (null when not written).
  returned: always
  type: str
  sample: /opt/blobshift/blob-migration-logs/verify-report.json
summary:
  description: The engine's summary lines.
  returned: always
  type: list
  elements: str
exit_code:
  description:
    - The exit code the CLI would have returned (0 clean, 1 problems, 2 bad input,
      3 store preflight failed).
  returned: always
  type: int
"""

import os
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.blobshift_common import (
    HAS_ENGINE,
    RC_IO,
    RC_USAGE,
    capture_output,
    load_engine_settings,
    require_engine,
    run_engine,
)

if HAS_ENGINE:
    from blobshift.metrics import check_metrics_path
    from blobshift.verify import load_accept_list, summarize, verify, write_report

ARGUMENT_SPEC = dict(
    settings=dict(type="path", required=True),
    report=dict(type="path"),
    checksum=dict(type="bool", default=False),
    metadata=dict(type="bool", default=False),
    prefix=dict(type="str", default=""),
    num_workers=dict(type="int", default=8),
    accept_missing=dict(type="list", elements="str", default=[]),
    accept_missing_file=dict(type="path"),
    metrics_file=dict(type="path"),
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    require_engine(module)
    p = module.params
    if p["num_workers"] < 1:
        module.fail_json(msg=f"num_workers={p['num_workers']}: must be at least 1")
    accept = set(p["accept_missing"])
    if p["accept_missing_file"]:
        path = p["accept_missing_file"]
        if not os.path.isfile(path):
            module.fail_json(msg=f"accept_missing_file {path}: no such file on this host")
        try:
            accept |= load_accept_list(Path(path))
        except (OSError, ValueError, KeyError) as exc:
            module.fail_json(
                msg=f"accept_missing_file {path}: unreadable ({type(exc).__name__}: {exc})",
                exit_code=RC_USAGE,
            )
    if p["metrics_file"] and (why := check_metrics_path(Path(p["metrics_file"]), "metrics_file")):
        module.fail_json(msg=why)
    settings = load_engine_settings(module, p["settings"])
    out = capture_output()
    report = run_engine(
        module,
        f"verify with {p['settings']}",
        verify(
            settings,
            checksum=p["checksum"],
            metadata=p["metadata"],
            prefix=p["prefix"],
            num_workers=p["num_workers"],
            accept=accept or None,
            out=out,
            metrics_file=None
            if module.check_mode or not p["metrics_file"]
            else Path(p["metrics_file"]),
        ),
        out,
    )
    report_path = None
    if p["report"] and not module.check_mode:
        try:
            write_report(report, Path(p["report"]), settings)
        except OSError as exc:
            module.fail_json(
                msg=f"verify report {p['report']} cannot be written: {exc.strerror}",
                exit_code=RC_IO,
                report=report.as_dict(),
            )
        report_path = p["report"]
    summary = summarize(report)
    ret = dict(
        clean=report.clean,
        problems=report.problems,
        report=report.as_dict(),
        report_path=report_path,
        summary=summary,
        exit_code=0 if report.clean else 1,
    )
    changed = report_path is not None
    if not report.clean:
        firsts = []
        for name in ("missing", "size_mismatch", "etag_mismatch", "content_mismatch"):
            keys = getattr(report, name)
            if keys:
                firsts.append(f"{len(keys)} {name.replace('_', ' ')} (e.g. {keys[0]!r})")
        where = f"; report: {report_path}" if report_path else ""
        module.fail_json(
            msg=(
                f"verify: the new store is NOT complete: {', '.join(firsts)}; backfill again "
                f"or check the logs, or list the keys accepted as lost in accept_missing{where}"
            ),
            changed=changed,
            **ret,
        )
    module.exit_json(changed=changed, **ret)


if __name__ == "__main__":
    main()
