"""Edit an environment's files for a runbook phase, in place, keeping comments and order.

The phases change two files: the inventory (`[riakcs]`, `[riakcs_new]`) and `public.yml`
(the `localsettings` flags, `blobshift_new_store.external_url`). These edits are line
edits, not a YAML/INI round trip, so an operator's comments and layout survive; every
result is parsed again and checked before it is written.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MIGRATING = "BLOB_DB_MIGRATING_FROM_S3_TO_S3"
TEMP_PROXY = "TEMP_RIAKCS_PROXY"
RETIRED = "riakcs_retired"

# transition -> {state it starts from: state it leads to}
TRANSITIONS: dict[str, dict[str, str]] = {
    "start": {"steady": "migrating"},  # migrating_riakcs or migrating_external
    "flip": {"migrating_riakcs": "flipping", "migrating_external": "steady_external"},
    "finish": {"flipping": "steady"},
    "abort": {"migrating_riakcs": "steady", "migrating_external": "steady"},
    "unflip": {"flipping": "migrating_riakcs"},
}


class EnvEditError(Exception):
    """The files are not what the transition expects; nothing was written."""


@dataclass
class Inventory:
    """An INI inventory as sections of raw lines (comments and blank lines kept)."""

    preamble: list[str] = field(default_factory=list)
    sections: list[tuple[str, list[str]]] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> Inventory:
        inv = cls()
        current: list[str] = inv.preamble
        for line in text.splitlines():
            m = re.match(r"^\[([^\]]+)\]\s*$", line)
            if m:
                current = []
                inv.sections.append((m.group(1).strip(), current))
            else:
                current.append(line)
        return inv

    def render(self) -> str:
        out = list(self.preamble)
        for name, lines in self.sections:
            out.append(f"[{name}]")
            out += lines
        return "\n".join(out) + "\n"

    def lines(self, group: str) -> list[str] | None:
        for name, lines in self.sections:
            if name == group:
                return lines
        return None

    def hosts(self, group: str) -> list[str]:
        return [line for line in self.lines(group) or [] if _is_host(line)]

    def set_hosts(self, group: str, hosts: list[str]) -> None:
        """Replace the host lines of `group` (creating it at the end), keeping its comments."""
        lines = self.lines(group)
        if lines is None:
            lines = [""] if self.sections and self.sections[-1][1][-1:] != [""] else []
            self.sections[-1][1].extend(lines)
            lines = []
            self.sections.append((group, lines))
        kept = [line for line in lines if not _is_host(line)]
        # Host lines go after the section's leading comments, before trailing blank lines.
        tail = 0
        while tail < len(kept) and not kept[-1 - tail].strip():
            tail += 1
        head = kept[: len(kept) - tail]
        lines[:] = head + hosts + kept[len(kept) - tail :]


def _is_host(line: str) -> bool:
    s = line.strip()
    return bool(s) and not s.startswith(("#", ";"))


def _block_bounds(lines: list[str], key: str) -> tuple[int, int]:
    """(index of `key:` at top level, index after its indented block)."""
    for i, line in enumerate(lines):
        if re.match(rf"^{re.escape(key)}:\s*(#.*)?$", line):
            end = i + 1
            while end < len(lines) and (not lines[end].strip() or lines[end][:1] in " \t#"):
                end += 1
            # trailing blank/comment lines belong to what follows
            while end > i + 1 and lines[end - 1].lstrip()[:1] in ("", "#"):
                end -= 1
            return i, end
    raise EnvEditError(f"no top-level `{key}:` mapping")


def set_nested(text: str, block: str, key: str, value: str, comment: str = "") -> str:
    """Set `block.key` to the YAML scalar `value` in `text`, keeping everything else."""
    lines = text.splitlines()
    start, end = _block_bounds(lines, block)
    indent = "  "
    for i in range(start + 1, end):
        m = re.match(rf"^(\s+){re.escape(key)}:(.*)$", lines[i])
        if m:
            old = m.group(2)
            hash_at = old.find(" #")
            # An existing comment stays, with its spacing; a new one replaces it.
            keep = old[len(old[:hash_at].rstrip()) :] if hash_at >= 0 else ""
            note = f"  # {comment}" if comment else keep
            lines[i] = f"{m.group(1)}{key}: {value}{note}"
            break
        if lines[i].strip() and not lines[i].lstrip().startswith("#"):
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())] or indent
    else:
        note = f"  # {comment}" if comment else ""
        lines.insert(end, f"{indent}{key}: {value}{note}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class EnvView:
    """What the transitions need to know of the files, read from the files themselves."""

    migrating: bool
    temp_proxy: bool
    external_url: str
    riakcs: tuple[str, ...]
    riakcs_new: tuple[str, ...]
    retired: tuple[str, ...]

    @property
    def state(self) -> str:
        if self.migrating and not self.temp_proxy:
            return "migrating_riakcs" if self.riakcs_new else "migrating_external"
        if self.temp_proxy and not self.migrating:
            return "flipping"
        if not self.migrating and not self.temp_proxy:
            return "steady_external" if self.external_url else "steady"
        return "invalid"


def _load_yaml(text: str, path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise EnvEditError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise EnvEditError(f"{path} must be a YAML mapping")
    return data


def view(hosts_text: str, public_text: str, public_path: Path) -> EnvView:
    data = _load_yaml(public_text, public_path)
    flags = data.get("localsettings") or {}
    if not isinstance(flags, dict):
        raise EnvEditError(f"{public_path}: localsettings must be a mapping")
    store = data.get("blobshift_new_store") or {}
    inv = Inventory.parse(hosts_text)
    return EnvView(
        migrating=flags.get(MIGRATING) is True,
        temp_proxy=flags.get(TEMP_PROXY) is True,
        external_url=str(store.get("external_url") or ""),
        riakcs=tuple(inv.hosts("riakcs")),
        riakcs_new=tuple(inv.hosts("riakcs_new")),
        retired=tuple(inv.hosts(RETIRED)),
    )


@dataclass
class Edit:
    transition: str
    from_state: str
    to_state: str
    hosts_before: str
    hosts_after: str
    public_before: str
    public_after: str

    @property
    def changed(self) -> bool:
        return self.hosts_before != self.hosts_after or self.public_before != self.public_after


def plan(
    transition: str,
    hosts_text: str,
    public_text: str,
    public_path: Path,
    external_url: str = "",
) -> Edit:
    """The edit for `transition`, checked: refuses a starting state it does not apply to.

    `external_url` is for "start" towards an external store (Amazon S3): the URL and the
    flag must change together, since a URL without the flag means "after the migration".
    """
    if transition not in TRANSITIONS:
        raise EnvEditError(f"unknown transition {transition!r}: one of {sorted(TRANSITIONS)}")
    before = view(hosts_text, public_text, public_path)
    moves = TRANSITIONS[transition]
    if before.state not in moves:
        raise EnvEditError(
            f"'{transition}' applies to state(s) {sorted(moves)}, but the files say "
            f"'{before.state}'"
        )
    inv = Inventory.parse(hosts_text)
    public = public_text

    def flag(text: str, name: str, on: bool) -> str:
        return set_nested(text, "localsettings", name, "true" if on else "false")

    if external_url and transition != "start":
        raise EnvEditError("external_url only goes with the 'start' transition")
    if transition == "start":
        if before.riakcs_new and external_url:
            raise EnvEditError(
                "both [riakcs_new] nodes and an external_url: the new store is one or the other"
            )
        if not before.riakcs_new and not external_url:
            raise EnvEditError(
                "no new store to migrate to: add its nodes under [riakcs_new] in the inventory, "
                "or give the external store's URL (-e new_store_url=https://...)"
            )
        if external_url and not external_url.startswith(("http://", "https://")):
            raise EnvEditError(f"external_url {external_url!r} must start with https:// or http://")
        if external_url:
            public = set_nested(public, "blobshift_new_store", "external_url", external_url)
        public = flag(public, MIGRATING, True)
    elif transition == "flip" and before.state == "migrating_riakcs":
        inv.set_hosts(RETIRED, list(before.riakcs))
        inv.set_hosts("riakcs", list(before.riakcs_new))
        inv.set_hosts("riakcs_new", [])
        public = flag(flag(public, MIGRATING, False), TEMP_PROXY, True)
    elif transition == "flip":  # external store: the app keeps talking to it directly
        public = flag(public, MIGRATING, False)
    elif transition == "finish":
        public = flag(public, TEMP_PROXY, False)
    elif transition == "abort":
        public = flag(public, MIGRATING, False)
        if before.external_url:
            note = f"was {before.external_url} before the rollback"
            public = set_nested(public, "blobshift_new_store", "external_url", '""', note)
    elif transition == "unflip":
        if not before.retired:
            raise EnvEditError(
                f"cannot unflip: [{RETIRED}] is empty, the old nodes are not known any more"
            )
        inv.set_hosts("riakcs_new", list(before.riakcs))
        inv.set_hosts("riakcs", list(before.retired))
        inv.set_hosts(RETIRED, [])
        public = flag(flag(public, TEMP_PROXY, False), MIGRATING, True)
    moved_nodes = transition in ("flip", "unflip") and before.state != "migrating_external"
    hosts_after = inv.render() if moved_nodes else hosts_text
    after = view(hosts_after, public, public_path)
    expected = moves[before.state]
    if after.state != expected and not after.state.startswith(expected + "_"):
        raise EnvEditError(f"internal: '{transition}' produced '{after.state}', not '{expected}'")
    return Edit(transition, before.state, after.state, hosts_text, hosts_after, public_text, public)


def git_dirty(path: Path) -> bool:
    """True when `path` is in a git work tree and has uncommitted changes (or is untracked).

    A file outside any repository (or with no git installed) is not dirty. Any other git
    failure (dubious ownership when the checkout belongs to another user, a broken
    repository) raises EnvEditError: it must never pass as "nothing uncommitted"."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--", path.name],
            cwd=path.resolve().parent,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except FileNotFoundError:
        return False
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvEditError(
            f"git status of {path} failed ({exc}): cannot tell whether it has uncommitted changes"
        ) from None
    if out.returncode != 0:
        if "not a git repository" in out.stderr:
            return False
        why = " ".join(out.stderr.split())[:300] or f"exit code {out.returncode}"
        raise EnvEditError(
            f"git status of {path} failed ({why}): cannot tell whether it has uncommitted "
            "changes; fix git's complaint (e.g. run the playbook as the checkout's owner)"
        )
    return bool(out.stdout.strip())


def write_atomic(path: Path, text: str) -> None:
    """Replace the file `path` points to (a symlink stays a symlink), keeping its mode."""
    real = path.resolve()
    tmp = real.with_name(f".{real.name}.blobshift-tmp")
    st = real.stat()
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, st.st_mode & 0o7777)
    if (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
        # The operator's checkout keeps its owner when the edit runs as another user.
        with contextlib.suppress(PermissionError):
            os.chown(tmp, st.st_uid, st.st_gid)
    os.replace(tmp, real)
