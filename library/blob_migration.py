#!/usr/bin/python
# Copyright: blobshift contributors
# Apache-2.0 (see the project's licence)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: blob_migration
short_description: Copy the old store's blobs missing in the new one (migrate-backend)
description:
  - Runs the blobshift backfill (C(blobshift migrate-backend)) on the host, with the app's
    deployed settings file, which names both stores and holds their credentials. Secrets
    never pass through the module's arguments nor any process's argument list.
  - The backfill is checkpointed in O(log_dir); a run that was stopped or killed resumes
    where it stopped when the module runs again with the same O(log_dir) and O(shard).
    Blobs that could not be copied are listed in a missing-blob log in O(log_dir), kept.
  - A long backfill should run detached from the SSH session, see
    C(playbooks/run_blob_migration.yml), which also re-attaches to a running one; either
    as an C(async) task with C(poll=0) (O(launcher=in_process)), or, on a host whose init
    is systemd, as a transient systemd unit of its own (O(launcher=systemd)).
  - With O(launcher=in_process) the engine runs in the module's process, so the task must
    run with the interpreter of the virtualenv where roles/blobshift_engine installed it
    (C(ansible_python_interpreter=<venv>/bin/python)).
  - With O(launcher=systemd) the module checks its arguments and the settings file as it
    does for a run, then starts the unit O(unit_prefix)C(-<slug>.service) (the slug of the
    shard's run files, e.g. C(blobshift-migrate_backend-shard0of2.service)) with
    C(systemd-run), running that virtualenv's C(blobshift migrate-backend) with the flags
    equivalent to its options as O(unit_user), and returns at once. The unit logs to the
    journal, survives the SSH session and the controller, and is restarted by systemd
    after a crash (kill -9, OOM; C(Restart=on-failure)), resuming from the checkpoint; the
    engine's normal ends (exit 0 finished, 1 finished with blobs logged, 130 stopped by
    SIGTERM) are successes (C(SuccessExitStatus=1 130)), and bad input (2) or a held lock
    (4) is not restarted (C(RestartPreventExitStatus=2 4)). This needs root (become).
version_added: "0.1.0"
author:
  - blobshift contributors
options:
  settings:
    description:
      - Path of the app's C(localsettings.py) on the host, with C(S3_BLOB_DB_SETTINGS)
        (the new store) and C(OLD_S3_BLOB_DB_SETTINGS) (the old store).
    type: path
    required: true
  log_dir:
    description:
      - Directory of the missing-blob logs, the checkpoint, the status file and the lock
        of the shard. Created if missing. Never deleted.
    type: path
    required: true
  chunk_size:
    description: Keys per checkpointed chunk.
    type: int
    default: 1000
  num_workers:
    description: Concurrent copies.
    type: int
    default: 15
  reset:
    description:
      - Forget the saved progress of this shard and start a new pass from the first key
        (blobs already in the new store are still skipped).
      - Ignored in check mode (a dry run never touches saved progress).
    type: bool
    default: false
  shard:
    description:
      - Take only the keys of shard C(I/N) (0-based, C(0 <= I < N)), so that N hosts
        share the work. Each shard has its own run files in O(log_dir).
    type: str
    default: "0/1"
  max_rps:
    description: At most this many objects read from the old store per second.
    type: float
  bwlimit:
    description: At most this many bytes read from the old store per second, e.g. C(20M).
    type: str
  multipart_threshold:
    description:
      - Copy objects larger than this in parts (of 8 MiB, each hashed here), e.g. C(8M)
        or C(200M); smaller ones go in one PUT, streamed when over 1 MiB, which the new
        store checks against the source's MD5 and which costs no hashing here.
      - Unset, the engine's default C(200M) (rclone's cutoff), the fastest where the
        new store takes large PUTs (an external endpoint such as Amazon S3). Behind a
        proxy with a 9M body limit (nginx in front of a Riak CS cluster), C(8M) sends
        nothing the proxy refuses; at C(200M) the first refused PUT goes again in parts,
        and so does every object as large for the rest of the run.
        C(playbooks/run_blob_migration.yml) picks between the two from where the new store
        is.
    type: str
  keys_from:
    description:
      - JSON lines manifest (C(blob_key), C(parent_id), C(type_code), C(domain)) to take
        the keys from instead of listing the old bucket.
    type: path
  prefix:
    description: Only keys that start with this prefix.
    type: str
    default: ""
  range_plan:
    description:
      - A range plan (C(blobshift plan-ranges)) of the old store, the key space cut into
        contiguous ranges; shard C(I/N) then lists only the ranges C(r) with
        C(r % N == I), so N hosts together list each store about once (without one,
        every shard lists the whole of both stores and keeps the keys that hash to it).
      - The same plan for every shard of a pass. The checkpoint records the plan's digest,
        and a pass started with another plan (or none) is refused.
      - Not with O(keys_from) (a manifest keeps hash shards).
    type: path
  reverse:
    description:
      - Rollback, as C(migrate-backend --reverse) does, copy the blobs only the new store holds
        back to the old one; the two stores of O(settings) trade places, so the limits,
        the key probe and the missing-blob logs apply to the old store as the target.
      - A reverse pass has run files of its own (C(migrate_backend-reverse...)) beside a
        backfill's in O(log_dir), and its own lock.
      - Not with O(range_plan) (a plan cuts the old store's listing; a reverse pass
        lists the new one), hash shards only.
    type: bool
    default: false
  max_chunks_ahead:
    description:
      - How many chunks the listing may run ahead of the oldest chunk still being copied
        (bounded run-ahead). Unset, the engine's default.
    type: int
  log_unfaithful_keys:
    description:
      - Before the first copy the engine writes, reads, lists and deletes probe keys of
        each risky kind (C(a//b), C(x/), dot segments, long segments, C(+), C(%), spaces,
        unicode, C(~)) in the new store. A kind the new store does not hold as written
        (SeaweedFS folds C(//) and turns C(x/) into a directory) makes the task fail
        before anything is copied, unless this is true; then such keys are logged as
        "cannot be stored faithfully" instead of being copied.
    type: bool
    default: false
  metrics_file:
    description:
      - Keep the run's metrics in this file, in Prometheus' text format (the C(blobshift_*)
        families listed in the README's Metrics section), replaced whole every few seconds
        and once at the end, for node_exporter's textfile collector (its directory on Debian
        is C(/var/lib/prometheus/node-exporter)). The name must end in C(.prom) and its
        directory must exist.
      - Not written in check mode.
    type: path
  launcher:
    description:
      - C(in_process) runs the backfill in the module's process (an C(async) task detaches it).
      - C(systemd) starts it as a transient systemd unit and returns (see the description);
        a unit of that name that failed is reset (C(systemctl reset-failed)) first, one
        that is active is refused (re-attach to it instead). Needs root and systemd.
    type: str
    choices: [in_process, systemd]
    default: in_process
  unit_prefix:
    description:
      - With O(launcher=systemd), the unit is named C(<unit_prefix>-<run-file slug>.service).
    type: str
    default: blobshift
  unit_user:
    description:
      - With O(launcher=systemd), the user the engine runs as (C(User=)); it must be able
        to read O(settings) and write O(log_dir). Unset, the owner of O(log_dir). Never root.
    type: str
  unit_restart_sec:
    description:
      - With O(launcher=systemd), seconds before systemd restarts a crashed engine
        (C(RestartSec=)).
    type: float
    default: 10
  unit_start_limit_burst:
    description:
      - With O(launcher=systemd), at most this many starts within O(unit_start_limit_interval)
        seconds (C(StartLimitBurst=)); an engine that crashes again and again is then left
        failed, for C(systemctl status) and C(journalctl -u).
    type: int
    default: 5
  unit_start_limit_interval:
    description:
      - With O(launcher=systemd), the window of O(unit_start_limit_burst), in seconds.
    type: int
    default: 3600
notes:
  - With O(launcher=systemd) and O(reset=true), the unit is not restarted after a crash
    (C(Restart=no)), since a restart would reset the pass again. Run it again without O(reset) to
    resume from the checkpoint.
  - Check mode runs the engine's dry run; it lists both stores and reports how many blobs
    would be copied (RV(would_copy)); it copies nothing and moves no checkpoint.
  - C(changed) is true only when blobs were copied (in check mode, would be copied).
  - The task fails when the settings are unusable, a store fails its preflight
    (unreachable, credentials, bucket), another backfill holds the shard's lock, the log
    dir cannot be written, or the run was stopped (SIGTERM). A finished run that logged
    blobs does not fail; it warns and returns RV(counts.logged) and the log path.
seealso:
  - module: blob_log_check
  - module: blob_migration_verify
  - module: blob_migration_info
requirements:
  - blobshift (installed by roles/blobshift_engine) in the interpreter running the module
"""

EXAMPLES = r"""
- name: Backfill shard 0 of 2, detached from the SSH session
  blob_migration:
    settings: /etc/app/localsettings.py
    log_dir: /opt/blobshift/blob-migration-logs
    shard: "0/2"
    num_workers: 15
    max_rps: 500
  vars:
    ansible_python_interpreter: /opt/blobshift/venv/bin/python
  async: 2592000
  poll: 0
  register: backfill_job

- name: Rollback, copy the new store's own blobs back to the old one, detached
  blob_migration:
    settings: /opt/blobshift/blob-migration-logs/rollback-localsettings.py
    log_dir: /opt/blobshift/blob-migration-logs
    reverse: true
  vars:
    ansible_python_interpreter: /opt/blobshift/venv/bin/python
  async: 2592000
  poll: 0
  register: reverse_job

- name: Backfill shard 1 of 2 as a transient systemd unit, run by the app's user
  blob_migration:
    settings: /etc/app/localsettings.py
    log_dir: /opt/blobshift/blob-migration-logs
    shard: "1/2"
    launcher: systemd
    unit_user: blobapp
  vars:
    ansible_python_interpreter: /opt/blobshift/venv/bin/python
  become: true
  register: backfill_unit

- name: Count what a backfill would copy (dry run)
  blob_migration:
    settings: /etc/app/localsettings.py
    log_dir: /opt/blobshift/blob-migration-logs
  check_mode: true
  register: would
"""

RETURN = r"""
counts:
  description: What this run did (a resumed pass counts only its own part).
  returned: always
  type: dict
  contains:
    listed:
      description: Keys of this shard examined.
      type: int
    copied:
      description: Blobs copied from old to new.
      type: int
    skipped:
      description: Blobs already present in new.
      type: int
    logged:
      description: Blobs that could not be copied, written to the missing-blob log.
      type: int
    bytes:
      description: Bytes copied.
      type: int
    retries:
      description: Copy attempts retried.
      type: int
  sample: {listed: 1200, copied: 1190, skipped: 8, logged: 2, bytes: 1218560, retries: 0}
totals:
  description: Counts of the whole pass, over every resumed run of it (from the checkpoint).
  returned: success, not in check mode
  type: dict
  sample: {listed: 5000, copied: 4990, skipped: 8, logged: 2, bytes: 5109760, retries: 1}
would_copy:
  description: In check mode, the number of blobs a real run would copy.
  returned: check mode
  type: int
  sample: 4990
complete:
  description: Whether the pass went through every key of the shard.
  returned: success
  type: bool
log:
  description: Path of this run's missing-blob log (JSON lines), kept in O(log_dir).
  returned: success, not in check mode
  type: str
  sample: /opt/blobshift/logs/migrate_backend-shard0of2-blob-migration-20261124T010203Z.txt
logs:
  description: Every missing-blob log of this shard's pass, oldest first.
  returned: success, not in check mode
  type: list
  elements: str
status_path:
  description: The shard's status file (state, counts, pid), updated while it runs.
  returned: always
  type: str
  sample: /opt/blobshift/blob-migration-logs/migrate_backend-shard0of2-status.json
checkpoint_path:
  description: The shard's checkpoint file.
  returned: always
  type: str
shard:
  description: The shard, as C(I/N).
  returned: always
  type: str
  sample: "0/2"
reverse:
  description: Whether this was a reverse pass (O(reverse)).
  returned: always
  type: bool
elapsed:
  description: Seconds the run took.
  returned: success
  type: float
exit_code:
  description:
    - The exit code the CLI would have returned (0 done, 1 blobs logged, 2 bad input,
      3 store preflight failed, 4 locked, 5 log dir unwritable, 130 stopped).
  returned: always
  type: int
output:
  description: The engine's messages (last 200 lines).
  returned: always
  type: list
  elements: str
unit:
  description:
    - With O(launcher=systemd), the unit started, as C(systemctl show) reported it right
      after the start (see M(blob_migration_info)'s RV(blob_migration_info#module:unit)).
  returned: launcher is systemd, not in check mode
  type: dict
  sample: {"name": "blobshift-migrate_backend-shard1of2.service", "active_state": "active",
           "main_pid": 4242, "invocation_id": "4c1e...", "user": "blobapp"}
unit_name:
  description:
    - With O(launcher=systemd), the unit's name.
  returned: launcher is systemd
  type: str
  sample: blobshift-migrate_backend-shard1of2.service
argv:
  description:
    - With O(launcher=systemd), the command line the unit runs (paths and flags, no secret).
  returned: launcher is systemd
  type: list
  elements: str
reset_failed:
  description:
    - With O(launcher=systemd), whether a failed unit of that name was reset first.
  returned: launcher is systemd
  type: bool
engine_version:
  description: Version of the blobshift engine that ran.
  returned: success
  type: str
  sample: 0.1.0
"""

import os
import pwd
import sys
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.blobshift_common import (
    ENGINE_VERSION,
    HAS_ENGINE,
    RC_INCOMPLETE,
    RC_LOCKED,
    RC_OK,
    RC_STOPPED,
    RC_USAGE,
    capture_output,
    load_engine_settings,
    output_lines,
    parse_shard,
    require_engine,
    run_engine,
    shard_paths,
)
from ansible.module_utils.blobshift_runstate import read_unit, systemd_booted, unit_name

if HAS_ENGINE:
    from blobshift.backfill import Backfill, BackfillOptions
    from blobshift.copy import CopyOptions
    from blobshift.metrics import check_metrics_path
    from blobshift.ratelimit import parse_size
    from blobshift.sources import Shard

ARGUMENT_SPEC = dict(
    settings=dict(type="path", required=True),
    log_dir=dict(type="path", required=True),
    chunk_size=dict(type="int", default=1000),
    num_workers=dict(type="int", default=15),
    reset=dict(type="bool", default=False),
    shard=dict(type="str", default="0/1"),
    max_rps=dict(type="float"),
    bwlimit=dict(type="str"),
    multipart_threshold=dict(type="str"),
    keys_from=dict(type="path"),
    prefix=dict(type="str", default=""),
    range_plan=dict(type="path"),
    reverse=dict(type="bool", default=False),
    max_chunks_ahead=dict(type="int"),
    log_unfaithful_keys=dict(type="bool", default=False),
    metrics_file=dict(type="path"),
    launcher=dict(type="str", choices=["in_process", "systemd"], default="in_process"),
    unit_prefix=dict(type="str", default="blobshift"),
    unit_user=dict(type="str"),
    unit_restart_sec=dict(type="float", default=10),
    unit_start_limit_burst=dict(type="int", default=5),
    unit_start_limit_interval=dict(type="int", default=3600),
)

# The one mapping from the module's options to `blobshift migrate-backend`'s flags (a unit
# runs the CLI): a true bool is the bare flag; None, False and "" are left out.
CLI_FLAGS = {
    "settings": "--settings",
    "log_dir": "--log-dir",
    "chunk_size": "--chunk-size",
    "num_workers": "--num-workers",
    "reset": "--reset",
    "shard": "--shard",
    "max_rps": "--max-rps",
    "bwlimit": "--bwlimit",
    "multipart_threshold": "--multipart-threshold",
    "keys_from": "--keys-from",
    "prefix": "--prefix",
    "range_plan": "--range-plan",
    "reverse": "--reverse",
    "max_chunks_ahead": "--max-chunks-ahead",
    "log_unfaithful_keys": "--log-unfaithful-keys",
    "metrics_file": "--metrics-file",
}
# The engine's normal ends are no failure (finished, finished with blobs logged, stopped by
# SIGTERM), bad input and a held lock are not restarted: a restart would end the same way.
UNIT_SUCCESS_EXIT = f"{RC_INCOMPLETE} {RC_STOPPED}"
UNIT_NO_RESTART_EXIT = f"{RC_USAGE} {RC_LOCKED}"


def _size_arg(module, name):
    """A size argument (e.g. 20M) in bytes, or None when unset."""
    text = module.params[name]
    if text is None:
        return None
    try:
        value = parse_size(text)
    except ValueError as exc:
        module.fail_json(msg=f"{name}: {exc}")
    if value < 1:
        module.fail_json(msg=f"{name}={text}: must be positive")
    return value


def validate(module):
    """Check the arguments before anything runs; return (shard index, count, bwlimit,
    multipart threshold)."""
    p = module.params
    for name in ("chunk_size", "num_workers"):
        if p[name] < 1:
            module.fail_json(msg=f"{name}={p[name]}: must be at least 1")
    if p["max_rps"] is not None and p["max_rps"] <= 0:
        module.fail_json(msg=f"max_rps={p['max_rps']}: must be positive")
    try:
        index, count = parse_shard(p["shard"])
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    bwlimit = _size_arg(module, "bwlimit")
    threshold = _size_arg(module, "multipart_threshold")
    if p["keys_from"] is not None and not os.path.isfile(p["keys_from"]):
        module.fail_json(msg=f"keys_from {p['keys_from']}: no such manifest file on this host")
    if p["range_plan"] is not None:
        if p["reverse"]:
            module.fail_json(
                msg="range_plan and reverse: a range plan cuts the old store's listing and a "
                "reverse pass lists the new one; a reverse pass takes hash shards, drop range_plan"
            )
        if p["keys_from"] is not None:
            module.fail_json(
                msg="range_plan and keys_from: a manifest is sharded by hash, not by ranges; "
                "give one of them"
            )
        if not os.path.isfile(p["range_plan"]):
            module.fail_json(
                msg=f"range_plan {p['range_plan']}: no such file on this host (make it with "
                "blobshift plan-ranges, or let playbooks/run_blob_migration.yml copy it)"
            )
    if p["max_chunks_ahead"] is not None and p["max_chunks_ahead"] < 1:
        module.fail_json(msg=f"max_chunks_ahead={p['max_chunks_ahead']}: must be at least 1")
    if os.path.exists(p["log_dir"]) and not os.path.isdir(p["log_dir"]):
        module.fail_json(msg=f"log_dir {p['log_dir']} exists and is not a directory")
    if p["metrics_file"] and (why := check_metrics_path(Path(p["metrics_file"]), "metrics_file")):
        module.fail_json(msg=why)
    return index, count, bwlimit, threshold


def engine_options(module, bwlimit, threshold, index, count):
    """The engine's options from the module's arguments."""
    p = module.params
    # Only what is set: an engine without range shards still runs hash-sharded backfills.
    newer = {}
    if p["range_plan"] is not None:
        newer["range_plan"] = Path(p["range_plan"])
    if p["max_chunks_ahead"] is not None:
        newer["max_chunks_ahead"] = p["max_chunks_ahead"]
    try:
        return BackfillOptions(
            log_dir=Path(p["log_dir"]),
            chunk_size=p["chunk_size"],
            num_workers=p["num_workers"],
            reset=p["reset"] and not module.check_mode,
            dry_run=module.check_mode,
            prefix=p["prefix"],
            keys_from=Path(p["keys_from"]) if p["keys_from"] else None,
            shard=Shard(index, count),
            max_rps=p["max_rps"],
            bwlimit=bwlimit,
            copy=CopyOptions() if threshold is None else CopyOptions(multipart_threshold=threshold),
            reverse=p["reverse"],
            log_unfaithful_keys=p["log_unfaithful_keys"],
            metrics_file=Path(p["metrics_file"]) if p["metrics_file"] else None,
            **newer,
        )
    except TypeError:
        module.fail_json(
            msg=f"the engine on this host ({ENGINE_VERSION}) does not know "
            f"{', '.join(sorted(newer))}: install this checkout's engine (roles/blobshift_engine)"
        )


def cli_argv(params):
    """The engine's command line (the virtualenv of this interpreter) for these options."""
    argv = [os.path.join(os.path.dirname(sys.executable), "blobshift"), "migrate-backend"]
    for name, flag in CLI_FLAGS.items():
        value = params[name]
        if value is None or value is False or value == "":
            continue
        argv += [flag] if value is True else [flag, str(value)]
    return argv


def unit_user(module):
    """The user the unit's engine runs as: unit_user, else the log dir's owner; not root."""
    p = module.params
    name = p["unit_user"]
    if name is None:
        try:
            name = pwd.getpwuid(os.stat(p["log_dir"]).st_uid).pw_name
        except (OSError, KeyError):
            module.fail_json(
                msg=f"launcher=systemd: unit_user is unset and log_dir {p['log_dir']} has no "
                "owner to run as: create it for the app's user or set unit_user"
            )
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        module.fail_json(msg=f"unit_user {name}: no such user on this host")
    if entry.pw_uid == 0:
        module.fail_json(
            msg=f"launcher=systemd: the engine would run as root ({name}): set unit_user (the "
            "app's user, blob_migration_user) or give log_dir to that user. Nothing was started"
        )
    return name


def start_unit(module, base, index, count):
    """Start the backfill as a transient systemd unit and exit (launcher=systemd)."""
    p = module.params
    if not systemd_booted():
        module.fail_json(
            msg="launcher=systemd: this host's init is not systemd (no /run/systemd/system): "
            "use launcher=in_process (blob_migration_launcher=async)",
            **base,
        )
    for name in ("unit_restart_sec", "unit_start_limit_burst", "unit_start_limit_interval"):
        if p[name] <= 0:
            module.fail_json(msg=f"{name}={p[name]}: must be positive", **base)
    user = unit_user(module)
    name = unit_name(p["unit_prefix"], index, count, p["reverse"])
    argv = cli_argv(p)
    ret = dict(base, unit_name=name, argv=argv, reset_failed=False, launcher="systemd")
    before = read_unit(name)
    if before.get("error"):
        module.fail_json(msg=f"unit {name}: {before['error']}", **ret)
    if before["active"]:
        module.fail_json(
            msg=f"unit {name} is already {before['active_state']} (main pid "
            f"{before['main_pid']}): re-attach to it (re-run playbooks/run_blob_migration.yml) "
            f"or stop it (systemctl stop {name}; it saves its progress). Nothing was started",
            unit=before,
            **ret,
        )
    ret["reset_failed"] = before["failed"]
    if module.check_mode:
        module.exit_json(changed=True, **ret)
    if before["failed"]:
        # A failed unit stays loaded for inspection; systemd-run refuses the name until reset.
        module.run_command(["systemctl", "reset-failed", "--", name], check_rc=True)
    restart = "no" if p["reset"] else "on-failure"
    what = "reverse pass" if p["reverse"] else "backfill"
    cmd = [
        "systemd-run",
        f"--unit={name}",
        f"--uid={user}",
        f"--description=blobshift {what} of shard {index}/{count} ({p['log_dir']})",
        f"--property=Restart={restart}",
        f"--property=RestartSec={p['unit_restart_sec']:g}",
        f"--property=SuccessExitStatus={UNIT_SUCCESS_EXIT}",
        f"--property=RestartPreventExitStatus={UNIT_NO_RESTART_EXIT}",
        f"--property=StartLimitIntervalSec={p['unit_start_limit_interval']}",
        f"--property=StartLimitBurst={p['unit_start_limit_burst']}",
        "--",
        *argv,
    ]
    rc, out, err = module.run_command(cmd)
    if rc != 0:
        module.fail_json(msg=f"systemd-run {name} failed (rc {rc}): {(err or out).strip()}", **ret)
    module.exit_json(changed=True, unit=read_unit(name), **ret)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    require_engine(module)
    p = module.params
    index, count, bwlimit, threshold = validate(module)
    paths = shard_paths(p["log_dir"], index, count, p["reverse"])
    base = dict(
        shard=f"{index}/{count}",
        reverse=p["reverse"],
        status_path=paths["status"],
        checkpoint_path=paths["checkpoint"],
    )
    settings = load_engine_settings(module, p["settings"])
    options = engine_options(module, bwlimit, threshold, index, count)
    if p["launcher"] == "systemd":
        start_unit(module, base, index, count)
    out = capture_output()
    what = "reverse pass" if p["reverse"] else "backfill"
    result = run_engine(
        module,
        f"{what} of shard {index}/{count} with {p['settings']}",
        Backfill(settings, options, out).run(),
        out,
        **base,
    )
    counts = result.counts.as_dict()
    ret = dict(
        base,
        counts=counts,
        complete=result.complete,
        elapsed=round(result.elapsed, 2),
        exit_code=result.exit_code,
        output=output_lines(out),
        engine_version=ENGINE_VERSION,
    )
    if module.check_mode:
        ret.update(would_copy=result.would_copy, complete=True, exit_code=RC_OK)
        module.exit_json(changed=result.would_copy > 0, **ret)
    ret.update(
        totals=result.totals,
        log=str(result.log) if result.log else None,
        logs=result.logs,
    )
    changed = counts["copied"] > 0
    if result.exit_code == RC_STOPPED:
        module.fail_json(
            msg=(
                f"{what} of shard {index}/{count} was stopped (SIGTERM/SIGINT) after "
                f"copying {counts['copied']} blobs; progress is saved in "
                f"{paths['checkpoint']}: run it again to resume"
            ),
            changed=changed,
            **ret,
        )
    if result.exit_code == RC_INCOMPLETE:
        module.warn(
            f"shard {index}/{count}: {counts['logged']} blob(s) could not be copied; they are "
            f"listed in {ret['log']}: classify them with playbooks/check_blob_logs.yml"
        )
    module.exit_json(changed=changed, **ret)


if __name__ == "__main__":
    main()
