"""Vars plugin: name the file when an environment's YAML is malformed.

ansible-core 2.19 reports a YAML error in group_vars without saying which file it is in.
This plugin runs before host_group_vars (see vars_plugins_enabled in ansible.cfg), parses
every plain-text file of the inventory's group_vars/all/ (the environment's public.yml
and friends, usually symlinks), and fails with the real path, line and column. Vault
files are decrypted with the password given, to name the file when it is wrong (Ansible
does not say which file either). It contributes no variables.
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
        password does not fit. Contributes no variables.
    options:
      stage:
        ini:
          - key: stage
            section: vars_blobshift_env_check
        env:
          - name: ANSIBLE_VARS_PLUGIN_STAGE
"""

_CHECKED: dict[str, float] = {}


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
                vault.decrypt(data)
            except AnsibleError:
                raise AnsibleParserError(
                    f"{real}{linked} could not be decrypted with the vault password given "
                    "(BLOBSHIFT_VAULT_PASSWORD_FILE or the prompt): wrong password for this "
                    "environment? Nothing was changed."
                ) from None
    else:
        try:
            yaml.load(data, Loader=_TolerantLoader)
        except yaml.YAMLError as exc:
            where = ""
            mark = getattr(exc, "problem_mark", None)
            if mark is not None:
                where = f" at line {mark.line + 1}, column {mark.column + 1}"
            problem = " ".join(
                str(p) for p in (getattr(exc, "context", None), getattr(exc, "problem", None)) if p
            ) or str(exc)
            raise AnsibleParserError(
                f"{real}{linked} is not valid YAML{where}: {problem}. Fix that file; "
                "nothing was changed."
            ) from None
    _CHECKED[real] = mtime


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
        return {}
