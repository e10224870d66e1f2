#!/usr/bin/python
# Copyright: blobshift contributors
# Apache-2.0 (see the project's licence)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: blob_migration_poll
short_description: Wait for a host's backfill jobs, keeping their checkpoints on the controller
description:
  - An action plugin (C(playbooks/action_plugins/blob_migration_poll.py)) that runs on the
    controller. It waits for the backfill shards one host runs (see
    C(playbooks/run_blob_migration.yml)) until each has ended, an async job by polling it
    with M(ansible.builtin.async_status), a systemd unit (O(jobs[].unit)) by reading it with
    M(blob_migration_info) until it is no longer active (a unit waiting to restart a
    crashed engine is still running the shard), and every O(fetch_interval) seconds reads each
    shard's run files with M(blob_migration_info) and writes its checkpoint and status file
    into that job's O(jobs[].fetch_to) directory on the controller (atomically, only when
    changed), and once more when the job ends.
  - A unit's result has the fields of an async job's M(blob_migration) result that the
    summary uses (C(failed), C(exit_code), C(counts), C(msg)), from its status file and
    C(systemctl show); so the summary is the same whichever launcher ran the shard.
  - So the controller holds each shard's latest checkpoint while the backfill runs, and a
    host lost mid-pass has its shard taken over from there.
  - A job still running after O(retries) polls goes on; it is reported failed with a
    message saying to re-run the playbook to re-attach.
version_added: "0.2.0"
author:
  - blobshift contributors
options:
  log_dir:
    description: The backfill's log dir on the host.
    type: path
    required: true
  jobs:
    description: The host's backfill jobs.
    type: list
    elements: dict
    required: true
    suboptions:
      jid:
        description: The async job id (one of O(jobs[].jid) and O(jobs[].unit)).
        type: str
        default: ""
      unit:
        description: The shard's systemd unit (launcher=systemd), instead of an async job.
        type: str
        default: ""
      shard:
        description: The job's shard, C(I/N).
        type: str
        required: true
      fetch_to:
        description: Directory on the controller for the shard's checkpoint and status file.
        type: path
        required: true
      reverse:
        description: The job is a rollback reverse pass (its own run files, M(blob_migration_info)).
        type: bool
        default: false
  delay:
    description: Seconds between polls.
    type: float
    default: 30
  retries:
    description: Polls before giving up waiting (the jobs go on).
    type: int
    default: 86400
  fetch_interval:
    description: Seconds between two copies of the run files to the controller.
    type: float
    default: 300
notes:
  - Does not support check mode (there is no job to wait for in a dry run).
  - Never fails because a job failed; each job's result is in RV(jobs).
seealso:
  - module: blob_migration
  - module: blob_migration_info
"""

EXAMPLES = r"""
- name: Wait for the shards of this host, copying their checkpoints every 5 minutes
  blob_migration_poll:
    log_dir: /opt/blobshift/blob-migration-logs
    jobs:
      - {jid: "j123.456", shard: "0/2", fetch_to: /srv/runs/prod/dm1}
      - unit: blobshift-migrate_backend-shard1of2.service
        shard: "1/2"
        fetch_to: /srv/runs/prod/dm2
    delay: 30
    fetch_interval: 300
  register: polled
"""

RETURN = r"""
jobs:
  description:
    - By shard, what M(ansible.builtin.async_status) returned for its job once it ended
      (the M(blob_migration) result with counts, exit_code, msg, failed), or C(finished=false,
      failed=true) for a job still running after O(retries) polls.
    - For a unit, C(finished), C(failed) (the unit failed, or its shard did not finish),
      C(exit_code) (the engine's, 130 when stopped), C(counts) (of its status file), C(msg),
      and C(unit) (what M(blob_migration_info) read of it).
  returned: always
  type: dict
  sample: {"0/2": {"finished": true, "counts": {"copied": 120}, "exit_code": 0}}
fetched:
  description: Files written on the controller.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

# The action plugin validates its arguments with this (it loads this file).
ARGUMENT_SPEC = dict(
    log_dir=dict(type="path", required=True),
    jobs=dict(
        type="list",
        elements="dict",
        required=True,
        options=dict(
            jid=dict(type="str", default=""),
            unit=dict(type="str", default=""),
            shard=dict(type="str", required=True),
            fetch_to=dict(type="path", required=True),
            reverse=dict(type="bool", default=False),
        ),
    ),
    delay=dict(type="float", default=30),
    retries=dict(type="int", default=86400),
    fetch_interval=dict(type="float", default=300),
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=False)
    module.fail_json(msg="blob_migration_poll is an action plugin: it runs on the controller")


if __name__ == "__main__":
    main()
