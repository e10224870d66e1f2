"""The state table, unit-tested on the one filter that encodes it (no Ansible run)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

PATH = (
    Path(__file__).resolve().parents[2] / "roles/blobshift_state/filter_plugins/blobshift_state.py"
)
_spec = importlib.util.spec_from_file_location("blobshift_state_filter", PATH)
state_filter = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(state_filter)

OLD = [{"host": "old1", "address": "10.0.0.1", "port": 8080}]
NEW = [{"host": "new1", "address": "10.0.1.1", "port": 8080}]
ALL_SECRETS = {
    "RIAKCS_S3_ACCESS_KEY": "value-new-access",
    "RIAKCS_S3_SECRET_KEY": "value-new-secret",
    "OLD_S3_BLOB_DB_ACCESS_KEY": "value-old-access",
    "OLD_S3_BLOB_DB_SECRET_KEY": "value-old-secret",
}


def derive(mig=False, temp=False, riakcs=OLD, riakcs_new=(), external="", secrets=None, **kw):
    inputs = {
        "env": "e",
        "public_loaded": True,
        "vault_loaded": True,
        "localsettings": {"BLOB_DB_MIGRATING_FROM_S3_TO_S3": mig, "TEMP_RIAKCS_PROXY": temp},
        "secrets": dict(ALL_SECRETS) if secrets is None else secrets,
        "new_store": {"bucket": "new", "external_url": external},
        "old_store": {"bucket": "old", "signature_version": "s3", "list_version": 1},
        "nodes": {"riakcs": list(riakcs), "riakcs_new": list(riakcs_new)},
        "proxy": {"address": "proxy", "port": 8080, "temp_port": 8081},
    }
    inputs.update(kw)
    return state_filter.blobshift_state(inputs)


def sites(state):
    return {s["name"]: (s["port"], [n["host"] for n in s["nodes"]]) for s in state["sites"]}


@pytest.mark.parametrize(
    ("kwargs", "name", "expected_sites", "new_url", "old_url"),
    [
        ({}, "steady", {"riakcs": (8080, ["old1"])}, "http://proxy:8080", None),
        (
            {"mig": True, "riakcs_new": NEW},
            "migrating_riakcs",
            {"riakcs": (8080, ["old1"]), "riakcs_new": (8081, ["new1"])},
            "http://proxy:8081",
            "http://proxy:8080",
        ),
        (
            {"mig": True, "external": "https://s3.example"},
            "migrating_external",
            {"riakcs": (8080, ["old1"])},
            "https://s3.example",
            "http://proxy:8080",
        ),
        (
            {"temp": True, "riakcs": NEW},
            "flipping",
            {"riakcs": (8080, ["new1"]), "riakcs_new": (8081, ["new1"])},
            "http://proxy:8080",
            None,
        ),
        ({"riakcs": NEW}, "steady", {"riakcs": (8080, ["new1"])}, "http://proxy:8080", None),
        (
            {"riakcs": [], "external": "https://s3.example"},
            "steady_external",
            {},
            "https://s3.example",
            None,
        ),
    ],
)
def test_state_table(kwargs, name, expected_sites, new_url, old_url):
    state = derive(**kwargs)
    assert state["errors"] == []
    assert state["name"] == name
    assert sites(state) == expected_sites
    assert set(state["absent_sites"]) == {"riakcs", "riakcs_new"} - set(expected_sites)
    assert state["new_store"]["url"] == new_url
    assert state["new_store"]["access_key_var"] == "RIAKCS_S3_ACCESS_KEY"
    assert (state["old_store"] or {}).get("url") == old_url
    assert state["migrating"] == (old_url is not None)
    assert "value-" not in repr(state)  # secrets are named, never copied


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        (
            {"mig": True, "temp": True, "riakcs_new": NEW},
            "are both true in environments/e/public.yml",
        ),
        ({"mig": True}, "there is no new store"),
        ({"mig": True, "riakcs_new": NEW, "external": "https://s3"}, "the new store is one or"),
        ({"temp": True, "riakcs_new": NEW}, "still lists ['new1']"),
        ({"temp": True, "external": "https://s3"}, "only serves a Riak CS flip"),
        ({"mig": True, "riakcs_new": OLD}, "['old1'] are in both [riakcs] and [riakcs_new]"),
        ({"riakcs": []}, "[riakcs] in inventories/e/hosts.ini is empty"),
        ({"mig": "yes"}, "must be true or false"),
        (
            {"mig": True, "riakcs_new": NEW, "secrets": {"RIAKCS_S3_ACCESS_KEY": "a"}},
            "secrets.OLD_S3_BLOB_DB_SECRET_KEY is missing or empty in environments/e/vault.yml",
        ),
        ({"secrets": {}}, "secrets.RIAKCS_S3_SECRET_KEY is missing"),
        ({"vault_loaded": False}, "environments/e/vault.yml was not loaded"),
        ({"public_loaded": False}, "environments/e/public.yml was not loaded"),
        ({"new_store": {"bucket": "b", "signature_version": "v2"}}, "use 's3' (SigV2"),
        ({"new_store": {"bucket": "b", "colour": 1}}, "unknown key(s) ['colour']"),
        ({"proxy": {"port": 8080, "temp_port": 8080}}, "are equal (8080)"),
        ({"settings_mode": "0644"}, "localsettings_mode in environments/e/public.yml is '0644'"),
        ({"settings_mode": 0o604}, "is '0604': localsettings.py holds the S3 secret keys"),
        ({"settings_mode": "u=rw,o=r"}, "use a quoted octal mode"),
        (
            {"localsettings": ["x"]},
            "localsettings in environments/e/public.yml must be a mapping, got a list",
        ),
        ({"secrets": "the-secret-value"}, "must be a mapping, got a string"),
    ],
)
def test_invalid_combinations_are_named(kwargs, fragment):
    state = derive(**kwargs)
    assert any(fragment in e for e in state["errors"]), state["errors"]


@pytest.mark.parametrize("mode", ["0640", "0600", "0440", 0o640, "", None])
def test_private_settings_modes_are_accepted(mode):
    assert derive(settings_mode=mode)["errors"] == []


def test_the_vault_value_is_never_quoted():
    state = derive(secrets="the-secret-value")
    assert "the-secret-value" not in repr(state)


def test_old_secrets_not_needed_outside_a_migration():
    secrets = {"RIAKCS_S3_ACCESS_KEY": "a", "RIAKCS_S3_SECRET_KEY": "b"}
    assert derive(secrets=secrets)["errors"] == []
    assert derive(temp=True, riakcs=NEW, secrets=secrets)["errors"] == []


def test_unused_riakcs_new_is_a_warning():
    state = derive(riakcs_new=NEW)
    assert state["errors"] == [] and state["name"] == "steady"
    assert "unused until" in state["warnings"][0]
