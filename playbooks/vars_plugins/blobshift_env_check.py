"""Vars plugin: name the file when an environment's YAML is malformed.

ansible-core 2.19 reports a YAML error in group_vars without saying which file it is in.
This plugin runs before host_group_vars (see vars_plugins_enabled in ansible.cfg), parses
every plain-text file of the inventory's group_vars/all/ (the environment's public.yml
and friends, usually symlinks), and fails with the real path, line and column. Vault
files are decrypted with the password given, to name the file when it is wrong or when
its decrypted content is malformed (Ansible does not say which file either; the content
is never quoted); a `vault*` file that is not encrypted is refused. It contributes no
variables.

It also makes an edited file count: a phase edits public.yml mid-run (env_transition.yml),
then refreshes the inventory, but Ansible's loader keeps every vars file it parsed, so
host_group_vars would go on serving the old content. When a file of group_vars/all/ has
changed since it was last seen, its parsed copy is dropped from the loader's cache, and
the plays after the edit see the new content at group_vars precedence (host and group
overrides still win, as they would not after an include_vars).
"""

from __future__ import annotations

import os

import yaml
from ansible.errors import AnsibleError, AnsibleParserError
from ansible.plugins.vars import BaseVarsPlugin

DOCUMENTATION = """
    name: blobshift_env_check
    short_description: Fail with the file name when an environment's YAML is malformed
    description:
      - Parses the plain-text YAML files of the inventory's group_vars/all directory
        and fails naming the file (and the symlink pointing to it), the line and the
        column of the first error; tries to decrypt vault files, naming the file when the
        password does not fit or when the decrypted content is malformed (never quoting
        it); refuses a vault file that is not encrypted. Contributes no variables.
    options:
      stage:
        ini:
          - key: stage
            section: vars_blobshift_env_check
        env:
          - name: ANSIBLE_VARS_PLUGIN_STAGE
"""

_CHECKED: dict[str, float] = {}
# (inode, mtime_ns, size) of each group_vars/all file when last seen, by its path there.
_SEEN: dict[str, tuple[int, int, int]] = {}


class _TolerantLoader(yaml.SafeLoader):
    """SafeLoader that accepts Ansible's own tags (!vault, !unsafe, ...)."""


_TolerantLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def _check(path: str, loader) -> None:
    real = os.path.realpath(path)
    mtime = os.path.getmtime(real)
    if _CHECKED.get(real) == mtime:
        return
    with open(real, "rb") as handle:
        data = handle.read()
    linked = f" (linked from {path})" if real != os.path.abspath(path) else ""
    if data.startswith(b"$ANSIBLE_VAULT"):
        vault = getattr(loader, "_vault", None)
        if vault is not None and getattr(vault, "secrets", None):
            try:
                plain = vault.decrypt(data)
            except AnsibleError:
                raise AnsibleParserError(
                    f"{real}{linked} could not be decrypted with the vault password given "
                    "(BLOBSHIFT_VAULT_PASSWORD_FILE or the prompt): wrong password for this "
                    "environment? Nothing was changed."
                ) from None
            # Ansible's own message for a malformed decrypted file names no file. Ours
            # names it, with the line and column, and never quotes the (secret) content.
            problem = _yaml_problem(plain, quote=False)
            if problem:
                raise AnsibleParserError(
                    f"{real}{linked} decrypts, but its content is not valid YAML{problem}. "
                    f"Fix it with `ansible-vault edit {real}`; nothing was changed."
                )
    elif any(os.path.basename(p).startswith("vault") for p in (path, real)):
        # A vault file holds the environment's secrets: never in clear text on disk.
        raise AnsibleParserError(
            f"{real}{linked} is not encrypted, but a vault file holds the environment's "
            f"secrets: run `ansible-vault encrypt {real}` (and rotate any secret it held "
            "if it was ever committed); nothing was changed."
        )
    else:
        problem = _yaml_problem(data, quote=True)
        if problem:
            raise AnsibleParserError(
                f"{real}{linked} is not valid YAML{problem}. Fix that file; nothing was changed."
            )
    _CHECKED[real] = mtime


def _forget_if_changed(path: str, loader) -> None:
    """Drop the loader's parsed copy of `path` when the file changed since it was seen.

    DataLoader keeps parsed files in `_FILE_CACHE` (ansible-core 2.19), keyed by the path
    as host_group_vars found it; without this the edited environment would never be read
    again. tests/test_phase_guards.py fails if a later ansible-core stops honouring it."""
    st = os.stat(path)
    seen = (st.st_ino, st.st_mtime_ns, st.st_size)
    if _SEEN.get(path, seen) != seen:
        cache = getattr(loader, "_FILE_CACHE", None)
        if isinstance(cache, dict):
            cache.pop(loader.path_dwim(path), None)
    _SEEN[path] = seen


def _yaml_problem(data: bytes, *, quote: bool) -> str:
    """'' if `data` parses, else ' at line L, column C: what is wrong'."""
    try:
        yaml.load(data, Loader=_TolerantLoader)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        # context/problem describe the YAML structure; str(exc) quotes the file's text,
        # which is allowed for a plain file only.
        problem = " ".join(
            str(p) for p in (getattr(exc, "context", None), getattr(exc, "problem", None)) if p
        ) or (str(exc) if quote else "malformed YAML")
        return f"{where}: {problem}"
    return ""


class VarsModule(BaseVarsPlugin):
    REQUIRES_ENABLED = True
    is_stateless = True

    def get_vars(self, loader, path, entities, cache=True):
        super().get_vars(loader, path, entities)
        if not isinstance(entities, list):
            entities = [entities]
        if not any(getattr(e, "name", None) == "all" for e in entities):
            return {}
        base = path if os.path.isdir(path) else os.path.dirname(path)
        folder = os.path.join(base, "group_vars", "all")
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                if name.endswith((".yml", ".yaml")):
                    _check(os.path.join(folder, name), loader)
                    _forget_if_changed(os.path.join(folder, name), loader)
        return {}
