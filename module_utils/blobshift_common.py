# Shared code of blobshift's Ansible modules (library/blob_*.py).
#
# The engine (the `blobshift` package) is imported in-process: the modules that do work run
# with the interpreter of the virtualenv that roles/blobshift_engine installs
# (ansible_python_interpreter=<venv>/bin/python). Secrets never pass through a module's
# arguments: the engine reads them from the app's settings file on the host.
#
# Everything below the engine section uses the standard library only, so the read-only
# blob_migration_info module works with any Python 3 (before the engine is installed).

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import sys
import traceback

# Reading a shard's run files is one implementation with the engine's `blobshift status`:
# blobshift_runstate.py is a symlink to src/blobshift/runstate.py (standard library only).
# shard_paths is re-exported for the modules that name the run files.
from ansible.module_utils.blobshift_runstate import shard_paths  # noqa: F401

try:
    from blobshift import __version__ as ENGINE_VERSION
    from blobshift.progress import Output
    from blobshift.runfiles import LockedError, RunFileError
    from blobshift.settings import SettingsError, load_settings
    from blobshift.sources import ManifestError
    from blobshift.stores import StoreError
except ImportError:
    HAS_ENGINE = False
    ENGINE_IMPORT_ERROR = traceback.format_exc()
    ENGINE_VERSION = None
else:
    HAS_ENGINE = True
    ENGINE_IMPORT_ERROR = None

# The engine's exit codes (blobshift --help), returned as `exit_code` for parity with the CLI
# (not as `rc`: Ansible fails any task whose result has a non-zero `rc`).
RC_OK, RC_INCOMPLETE, RC_USAGE, RC_STORE, RC_LOCKED, RC_IO, RC_STOPPED = 0, 1, 2, 3, 4, 5, 130

# Keep the engine's messages in results, but not without bound.
MAX_OUTPUT_LINES = 200


# -- shards and the run files of a shard (same names as blobshift.runfiles.RunPaths) -----


def parse_shard(text):
    """'I/N' with 0 <= I < N -> (I, N); ValueError with an operator-facing message."""
    try:
        index, count = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise ValueError(f"shard {text!r}: expected I/N, e.g. 0/2 and 1/2") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {text!r}: need N >= 1 and 0 <= I < N (I is 0-based)")
    return index, count


def dir_space(path):
    """(exists, writable, free_bytes) of `path`, or of its nearest existing parent."""
    probe = os.path.abspath(path)
    exists = os.path.isdir(probe)
    while not os.path.exists(probe) and probe != os.path.dirname(probe):
        probe = os.path.dirname(probe)
    writable = os.path.isdir(probe) and os.access(probe, os.W_OK | os.X_OK)
    try:
        st = os.statvfs(probe)
        free = st.f_bavail * st.f_frsize
    except OSError:
        free = None
    return exists, writable, free


# -- the engine, in-process ----------------------------------------------------------------


def require_engine(module):
    """Fail the task, naming the interpreter, when the engine cannot be imported."""
    if HAS_ENGINE:
        return
    module.fail_json(
        msg=(
            f"the blobshift engine is not installed for {sys.executable}: install it on "
            f"this host with roles/blobshift_engine and run this module with "
            f"ansible_python_interpreter=<blobshift_engine_venv>/bin/python"
        ),
        exception=ENGINE_IMPORT_ERROR,
    )


def check_settings_readable(module, path):
    """The settings file must exist and be readable; the message never shows content."""
    if not os.path.exists(path):
        module.fail_json(
            msg=f"settings file {path} does not exist on this host: deploy it with "
            f"playbooks/update_config.yml or pass settings=<path of the app's localsettings.py>"
        )
    if not os.path.isfile(path):
        module.fail_json(msg=f"settings file {path} is not a regular file")
    if not os.access(path, os.R_OK):
        module.fail_json(
            msg=f"settings file {path} is not readable by uid {os.getuid()}: run the task "
            f"as the app user (become_user) or fix the file's mode/owner"
        )


def load_engine_settings(module, path):
    """The validated settings (both stores required), or fail naming the file and cause."""
    check_settings_readable(module, path)
    try:
        return load_settings(path, require_old=True)
    except SettingsError as exc:
        module.fail_json(msg=f"settings file {path} is not usable: {exc}", exit_code=RC_USAGE)


def capture_output():
    """An engine Output that writes to memory: a module's stdout must stay pure JSON."""
    return Output(stream=io.StringIO(), tty=False)


def output_lines(out):
    text = out.stream.getvalue() if isinstance(out.stream, io.StringIO) else ""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-MAX_OUTPUT_LINES:]


def run_engine(module, what, coro, out, **extra):
    """Run an engine coroutine; translate its errors into fail_json with the CLI's exit code."""

    def fail(rc, msg):
        out.close()
        module.fail_json(msg=f"{what}: {msg}", exit_code=rc, output=output_lines(out), **extra)

    try:
        return asyncio.run(coro)
    except (SettingsError, ManifestError) as exc:
        fail(RC_USAGE, f"bad input, nothing was changed: {exc}")
    except LockedError as exc:
        fail(RC_LOCKED, str(exc))
    except RunFileError as exc:
        fail(RC_USAGE, str(exc))
    except StoreError as exc:
        fail(RC_STORE, f"a store failed its preflight, nothing was copied: {exc}")
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        fail(
            RC_IO,
            f"cannot write{where}: {exc.strerror}; progress is saved up to the last "
            "checkpoint: free space or fix permissions, then re-run",
        )
    except KeyboardInterrupt:
        fail(RC_STOPPED, "stopped by operator; progress is saved, re-run to resume")
    finally:
        with contextlib.suppress(Exception):
            out.close()
    return None  # not reached: fail_json exits
