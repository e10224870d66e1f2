"""Derive the migration state from an environment's inventory and public/vault vars.

This is the single place where the state table of the runbook is encoded. Every playbook's
preflight calls it (through the blobshift_state role) and refuses to go on while
`errors` is non-empty. Secret values are read only to test that they are set: the result
names secrets, never holds them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

MIGRATING = "BLOB_DB_MIGRATING_FROM_S3_TO_S3"
TEMP_PROXY = "TEMP_RIAKCS_PROXY"
NEW_SECRETS = ("RIAKCS_S3_ACCESS_KEY", "RIAKCS_S3_SECRET_KEY")
OLD_SECRETS = ("OLD_S3_BLOB_DB_ACCESS_KEY", "OLD_S3_BLOB_DB_SECRET_KEY")
STORE_DEFAULTS = {
    "bucket": "",
    "external_url": "",
    "signature_version": "s3v4",
    "list_version": 2,
    "verify": True,
    "region": "us-east-1",
    "bulk_delete_chunksize": 1000,
    "max_pool_connections": 10,
    "botocore_config": {"s3": {"addressing_style": "path"}},
    # Server behaviour the engine must follow ("riakcs"; see the README), else empty.
    "dialect": "",
}
DESCRIPTIONS = {
    "steady": "steady: one store behind the proxy on the main port (also 'done')",
    "steady_external": "steady: the app talks to the external store directly (after Amazon S3)",
    "migrating_riakcs": "migrating to a Riak CS cluster (riakcs_new behind the temporary port)",
    "migrating_external": "migrating to an external S3 endpoint (Amazon S3)",
    "flipping": "flipping: both proxy ports reach the new cluster, now in riakcs",
}


def _kind(value: object, show: bool = True) -> str:
    """What the YAML holds, in the operator's words (not Ansible's internal type names);
    the value itself only if `show` (never for the vault's content)."""
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, str):
        return f"the string {value!r}" if show and len(value) <= 40 else "a string"
    if isinstance(value, bool):
        return f"the boolean {value}" if show else "a boolean"
    if isinstance(value, int | float):
        return f"the number {value}" if show else "a number"
    if isinstance(value, Sequence):
        return "a list"
    return "null" if value is None else "a value of another kind"


def _flag(localsettings: Mapping, name: str, public: str, errors: list[str]) -> bool:
    value = localsettings.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        errors.append(f"localsettings.{name} in {public} must be true or false, got {value!r}")
        return False
    return value


def _store(raw: object, var: str, public: str, errors: list[str]) -> dict:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        errors.append(f"{var} in {public} must be a mapping, got {_kind(raw)}")
        raw = {}
    unknown = sorted(set(raw) - set(STORE_DEFAULTS))
    if unknown:
        errors.append(
            f"{var} in {public} has unknown key(s) {unknown}: expected {sorted(STORE_DEFAULTS)}"
        )
    store = {**STORE_DEFAULTS, **{k: v for k, v in raw.items() if k in STORE_DEFAULTS}}
    if not store["bucket"] or not isinstance(store["bucket"], str):
        errors.append(f"{var}.bucket in {public} must be a non-empty bucket name")
    if store["signature_version"] not in ("s3", "s3v4"):
        errors.append(
            f"{var}.signature_version in {public} is {store['signature_version']!r}: "
            "use 's3' (SigV2, Riak CS) or 's3v4'"
        )
    if store["list_version"] not in (1, 2):
        errors.append(f"{var}.list_version in {public} must be 1 (Riak CS) or 2")
    if store["dialect"] not in ("", "riakcs"):
        errors.append(f"{var}.dialect in {public} is {store['dialect']!r}: use 'riakcs' or ''")
    for key in ("bulk_delete_chunksize", "max_pool_connections"):
        value = store[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            errors.append(f"{var}.{key} in {public} must be a positive integer")
    if not isinstance(store["verify"], bool | str):
        errors.append(f"{var}.verify in {public} must be true, false or a CA bundle path")
    if not isinstance(store["botocore_config"], Mapping):
        errors.append(f"{var}.botocore_config in {public} must be a mapping")
    url = store["external_url"] or ""
    if url and not (isinstance(url, str) and url.startswith(("http://", "https://"))):
        errors.append(f"{var}.external_url in {public} must start with http:// or https://")
    store["external_url"] = url
    return store


def _settings_mode(raw: object, public: str, errors: list[str]) -> None:
    """localsettings.py holds the S3 secret keys: others get no access, ever."""
    if raw is None or raw == "":
        return
    if isinstance(raw, int) and not isinstance(raw, bool):
        mode = raw  # YAML reads an unquoted 0640 as the number 0o640
    elif isinstance(raw, str) and raw.isdigit() and set(raw) <= set("01234567"):
        mode = int(raw, 8)
    else:
        errors.append(
            f"localsettings_mode in {public} is {raw!r}: use a quoted octal mode such as "
            "'0640' (owner read/write, group read)"
        )
        return
    if mode & 0o007 or mode > 0o7777:
        errors.append(
            f"localsettings_mode in {public} is '{mode:04o}': localsettings.py holds the S3 "
            "secret keys, so others must get no access; use '0640' or '0600'"
        )


def blobshift_state(inputs: Mapping) -> dict:
    """Return the state dict (see roles/blobshift_state/README.md) for `inputs`."""
    env = inputs.get("env") or "?"
    public = f"environments/{env}/public.yml"
    vault = f"environments/{env}/vault.yml"
    hosts = f"inventories/{env}/hosts.ini"
    errors: list[str] = []
    warnings: list[str] = []

    localsettings = inputs.get("localsettings")
    if not inputs.get("public_loaded"):
        errors.append(
            f"{public} was not loaded (no `localsettings:` mapping): "
            f"inventories/{env}/group_vars/all/public.yml must point to it"
        )
        localsettings = {}
    elif not isinstance(localsettings, Mapping):
        errors.append(f"localsettings in {public} must be a mapping, got {_kind(localsettings)}")
        localsettings = {}
    secrets = inputs.get("secrets")
    if not inputs.get("vault_loaded"):
        errors.append(
            f"{vault} was not loaded (no `secrets:` mapping): "
            f"inventories/{env}/group_vars/all/vault.yml must point to it"
        )
        secrets = {}
    elif not isinstance(secrets, Mapping):
        errors.append(f"secrets in {vault} must be a mapping, got {_kind(secrets, show=False)}")
        secrets = {}

    migrating = _flag(localsettings, MIGRATING, public, errors)
    temp_proxy = _flag(localsettings, TEMP_PROXY, public, errors)
    new_store = _store(inputs.get("new_store"), "blobshift_new_store", public, errors)
    old_store = _store(inputs.get("old_store"), "blobshift_old_store", public, errors)
    nodes = inputs.get("nodes") or {}
    riakcs = list(nodes.get("riakcs") or [])
    riakcs_new = list(nodes.get("riakcs_new") or [])
    external = new_store["external_url"]

    both = sorted({n["host"] for n in riakcs} & {n["host"] for n in riakcs_new})
    if both:
        errors.append(
            f"host(s) {both} are in both [riakcs] and [riakcs_new] in {hosts}: "
            "a node belongs to the old or to the new cluster, remove it from the other group"
        )

    name = "steady"
    if migrating and temp_proxy:
        errors.append(
            f"localsettings.{MIGRATING} and localsettings.{TEMP_PROXY} are both true in "
            f"{public}: set only {MIGRATING} while migrating, only {TEMP_PROXY} while flipping"
        )
    elif migrating:
        if riakcs_new and external:
            errors.append(
                f"localsettings.{MIGRATING} is true with both [riakcs_new] hosts in {hosts} and "
                f"blobshift_new_store.external_url in {public}: the new store is one or the "
                "other (empty [riakcs_new] for Amazon S3, or unset external_url for Riak CS)"
            )
        elif riakcs_new:
            name = "migrating_riakcs"
        elif external:
            name = "migrating_external"
        else:
            errors.append(
                f"localsettings.{MIGRATING} is true but there is no new store: add the new "
                f"cluster's nodes under [riakcs_new] in {hosts}, or set "
                f"blobshift_new_store.external_url in {public}"
            )
    elif temp_proxy:
        name = "flipping"
        if riakcs_new:
            errors.append(
                f"localsettings.{TEMP_PROXY} is true but [riakcs_new] in {hosts} still lists "
                f"{[n['host'] for n in riakcs_new]}: move them to [riakcs] (and drop the old "
                "nodes) before flipping"
            )
        if external:
            errors.append(
                f"localsettings.{TEMP_PROXY} is true with blobshift_new_store.external_url set "
                f"in {public}: the temporary proxy only serves a Riak CS flip; unset one"
            )
    else:
        if riakcs_new:
            warnings.append(
                f"[riakcs_new] in {hosts} lists {[n['host'] for n in riakcs_new]}, unused until "
                f"localsettings.{MIGRATING} is set in {public}"
            )
        if external:
            name = "steady_external"

    if not riakcs and name != "steady_external":
        errors.append(
            f"[riakcs] in {hosts} is empty: the proxy's main site needs its nodes, add the "
            "current cluster's nodes under [riakcs]"
        )

    needed = list(NEW_SECRETS)
    if name.startswith("migrating"):
        needed += OLD_SECRETS
    for key in needed:
        value = secrets.get(key)
        if value is None or value == "" or not isinstance(value, str):
            errors.append(
                f"secrets.{key} is missing or empty in {vault}: add it (ansible-vault edit)"
            )

    proxy = inputs.get("proxy") or {}
    address = proxy.get("address") or "127.0.0.1"
    scheme = proxy.get("scheme") or "http"
    main_port = int(proxy.get("port") or 8080)
    temp_port = int(proxy.get("temp_port") or 8081)
    if main_port == temp_port:
        errors.append(
            f"blobshift_proxy_port and blobshift_proxy_temp_port in {public} are equal "
            f"({main_port}): give the temporary port a number of its own"
        )
    _settings_mode(inputs.get("settings_mode"), public, errors)

    def site(site_name: str, port: int, group: str, members: list) -> dict:
        return {"name": site_name, "port": port, "group": group, "nodes": members}

    sites = []
    if riakcs:
        sites.append(site("riakcs", main_port, "riakcs", riakcs))
    if name == "migrating_riakcs":
        sites.append(site("riakcs_new", temp_port, "riakcs_new", riakcs_new))
    elif name == "flipping":
        sites.append(site("riakcs_new", temp_port, "riakcs", riakcs))
    present = {s["name"] for s in sites}
    absent = [n for n in ("riakcs", "riakcs_new") if n not in present]

    main_url = f"{scheme}://{address}:{main_port}"
    temp_url = f"{scheme}://{address}:{temp_port}"
    new_url = {
        "migrating_riakcs": temp_url,
        "migrating_external": external,
        "steady_external": external,
    }.get(name, main_url)
    new = {**new_store, "url": new_url}
    new["access_key_var"], new["secret_key_var"] = NEW_SECRETS
    old = None
    if name.startswith("migrating"):
        old = {**old_store, "url": main_url}
        old["access_key_var"], old["secret_key_var"] = OLD_SECRETS
    for store in (new, old):
        if store is not None:
            store.pop("external_url", None)

    return {
        "env": env,
        "name": name,
        "description": DESCRIPTIONS[name],
        "migrating": name.startswith("migrating"),
        "errors": errors,
        "warnings": warnings,
        "sites": sites,
        "absent_sites": absent,
        "new_store": new,
        "old_store": old,
        "secrets_needed": needed,
    }


class FilterModule:
    def filters(self):
        return {"blobshift_state": blobshift_state}
