#!/usr/bin/python
# Copyright: blobshift contributors
# Apache-2.0 (see the project's licence)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: blob_migration_info
short_description: Read the state of a backfill shard from its run files, without disturbing it
description:
  - Reads the status file, the checkpoint and the Ansible job file of one backfill shard
    in O(log_dir) (see M(blob_migration)) and tells whether a backfill of that shard is
    running (it holds the shard's lock), with its counts, rate and missing-blob logs.
  - On a host whose init is systemd (C(/run/systemd/system) exists), also reports the
    shard's transient unit (M(blob_migration) with C(launcher=systemd)), as
    C(systemctl show) gives it, which needs no root.
  - Also reports whether O(log_dir) (or its nearest existing parent) is writable and its
    free space, for preflight checks.
  - Read-only; needs only the Python standard library (not the engine), so it works with
    the host's default interpreter.
version_added: "0.1.0"
author:
  - blobshift contributors
options:
  log_dir:
    description: The backfill's log dir on the host.
    type: path
    required: true
  shard:
    description: The shard, C(I/N) (0-based). C(0/1) for an unsharded backfill.
    type: str
    default: "0/1"
  reverse:
    description:
      - Read the shard's rollback reverse pass (M(blob_migration) with C(reverse=true)),
        whose run files (C(migrate_backend-reverse...)) are its own, instead of its backfill.
    type: bool
    default: false
  unit:
    description:
      - The name of the shard's systemd unit to read. Unset, the unit the job file names,
        else C(<unit_prefix>-<slug>.service) (e.g. C(blobshift-migrate_backend-shard0of2.service)).
      - Ignored on a host without systemd.
    type: str
  unit_prefix:
    description: The prefix of the shard's unit name when neither O(unit) nor the job file names it.
    type: str
    default: blobshift
notes:
  - The lock test takes a shared lock without waiting and drops it at once; a running
    backfill holds an exclusive lock, so it is never disturbed.
  - Supports check mode; never changes anything.
seealso:
  - module: blob_migration
"""

EXAMPLES = r"""
- name: Read the progress of shard 1 of 2
  blob_migration_info:
    log_dir: /opt/blobshift/blob-migration-logs
    shard: "1/2"
  register: shard_info

- name: Show it
  ansible.builtin.debug:
    msg: "{{ shard_info.state }}: {{ shard_info.status.counts | default({}) }}"
"""

RETURN = r"""
state:
  description:
    - C(not started) (no status file), C(running), C(finished), C(stopped), C(failed),
      or C(dead) when the status file says running but no process holds the lock
      (killed, host rebooted; a new run resumes from the checkpoint).
  returned: always
  type: str
  sample: running
running:
  description: Whether a process holds the shard's lock.
  returned: always
  type: bool
pid_alive:
  description: Whether the pid of the status file is a live process on this host.
  returned: always
  type: bool
status:
  description:
    - The status file's content (state, pid, counts, objects_per_second, log, logs,
      updated), or null.
  returned: always
  type: dict
checkpoint:
  description: The checkpoint's content (position, complete, totals, logs, updated), or null.
  returned: always
  type: dict
job:
  description:
    - The Ansible job file written by playbooks/run_blob_migration.yml (launcher, started,
      and jid for an async job or unit and invocation_id for a systemd unit), or null.
  returned: always
  type: dict
job_finished:
  description:
    - Whether the job of RV(job) has ended, that is its systemd unit is no longer active, or (an
      async job) its Ansible results file (the file M(ansible.builtin.async_status) reads)
      says so; false without a job file or results file.
    - A detached backfill takes its lock only after its preflight and key probe, so
      RV(running) is false for a moment after the start; this tells a start still under
      way from one that already ended (refused, failed or done).
  returned: always
  type: bool
logs:
  description: Missing-blob logs of the shard's pass (checkpoint, else status), oldest first.
  returned: always
  type: list
  elements: str
existing_logs:
  description: Those of RV(logs) that exist on the host.
  returned: always
  type: list
  elements: str
paths:
  description: The shard's run files (checkpoint, status, lock, job).
  returned: always
  type: dict
shard:
  description: The shard, as C(I/N).
  returned: always
  type: str
reverse:
  description: Whether these are the run files of a reverse pass (O(reverse)).
  returned: always
  type: bool
unit:
  description:
    - On a systemd host, the shard's unit as C(systemctl show) reports it (C(load_state)
      is C(not-found) for a unit never started or gone after ending well; a transient unit
      that failed stays loaded, for C(systemctl status) and C(journalctl -u), until the
      next start resets it); null on a host without systemd.
    - C(active) is true while the unit runs the shard or waits to restart it
      (ActiveState active, activating, deactivating or reloading).
  returned: always
  type: dict
  contains:
    name:
      description: "The unit's name."
      type: str
    id:
      description: "Id as systemd reports it (empty when not loaded)."
      type: str
    load_state:
      description: "LoadState (loaded, not-found)."
      type: str
    active_state:
      description: "ActiveState (active, activating, failed, inactive)."
      type: str
    sub_state:
      description: "SubState (running, auto-restart, failed, dead)."
      type: str
    result:
      description: "Result (success, exit-code, signal, start-limit-hit)."
      type: str
    exec_main_status:
      description: "ExecMainStatus, the engine's exit code or signal."
      type: int
    exec_main_code:
      description: "ExecMainCode (1 exited, 2 killed, 3 dumped)."
      type: int
    main_pid:
      description: "MainPID, the engine's pid (0 when not running)."
      type: int
    n_restarts:
      description: "NRestarts, restarts by systemd since its start."
      type: int
    invocation_id:
      description: "InvocationID of its current or last run."
      type: str
    user:
      description: "User the engine runs as."
      type: str
    active:
      description: "Whether the unit runs (or will restart) the shard."
      type: bool
    failed:
      description: "Whether the unit failed."
      type: bool
    error:
      description: "Why systemctl could not be read (only then)."
      type: str
  sample: {"name": "blobshift-migrate_backend-shard0of2.service", "active_state": "active",
           "sub_state": "running", "main_pid": 4242, "n_restarts": 0, "user": "blobapp",
           "active": true}
systemd_booted:
  description: Whether the host's init is systemd (C(/run/systemd/system) exists, sd_booted(3)).
  returned: always
  type: bool
running_shards:
  description:
    - Every shard of O(log_dir), whatever O(shard) says (backfill shards and rollback
      reverse passes), that a process is running now (it holds the shard's lock) or whose
      systemd unit is active (starting, or waiting to restart), with the pid of its status
      file (or its unit's main pid) and its unit's name.
      The flip refuses to start while this is not empty.
  returned: always
  type: list
  elements: dict
  sample: [{"shard": "1/2", "reverse": false, "pid": 4242, "unit": null}]
log_dir_exists:
  description: Whether O(log_dir) exists.
  returned: always
  type: bool
log_dir_writable:
  description: Whether O(log_dir), or its nearest existing parent, is writable by this user.
  returned: always
  type: bool
free_bytes:
  description:
    - Free bytes (for this user) on the file system of O(log_dir) or of its nearest
      existing parent.
  returned: always
  type: int
  sample: 53687091200
problems:
  description: Run files that exist but could not be read.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.blobshift_common import dir_space, parse_shard

# The run files are read by the code `blobshift status` uses (a symlink to the engine's
# blobshift/runstate.py, standard library only): this module runs before the engine is
# installed (run_blob_migration.yml's preflight checks the log dir with it).
from ansible.module_utils.blobshift_runstate import read_shard, running_shards

ARGUMENT_SPEC = dict(
    log_dir=dict(type="path", required=True),
    shard=dict(type="str", default="0/1"),
    reverse=dict(type="bool", default=False),
    unit=dict(type="str"),
    unit_prefix=dict(type="str", default="blobshift"),
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    try:
        index, count = parse_shard(p["shard"])
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    info = read_shard(p["log_dir"], index, count, p["reverse"], p["unit"], p["unit_prefix"])
    exists, writable, free = dir_space(p["log_dir"])
    module.exit_json(
        changed=False,
        **info,
        running_shards=running_shards(p["log_dir"]),
        log_dir_exists=exists,
        log_dir_writable=writable,
        free_bytes=free,
    )


if __name__ == "__main__":
    main()
