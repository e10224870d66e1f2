"""The whole runbook on the local lab (real nginx, SeaweedFS, ansible-playbook), the app
serving throughout: zero failed app requests, zero lost blobs, 8080 alone at the end."""

from __future__ import annotations

import json

import pytest

from blobshift.lab import runbook


@pytest.mark.parametrize(
    ("target", "blobs", "extra"),
    [("riakcs", 2000, ["--drill"]), ("external", 300, [])],
    ids=["riakcs-with-rollbacks", "external-https"],
)
def test_runbook_end_to_end(target, blobs, extra, tmp_path, capsys):
    code = runbook.main(
        ["--target", target, "--blobs", str(blobs), "--out", str(tmp_path), "--rate", "25", *extra]
    )
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    assert code == 0, out[-3000:]
    assert report["blobs_in_old_at_start"] == blobs
    assert report.get("lab_idempotent", True) is True
    assert report["app"]["failed"] == 0, report["app"]["failures"]
    phases = report["app"]["phases"]
    assert {"phase1", "phase2", "phase4", "after"} <= set(phases)
    assert all(phases[p]["requests"] > 0 for p in ("phase1", "phase2", "phase4"))
    assert report["audit"]["missing_in_new_store"] == 0
    assert report["audit"]["missing_through_app_settings"] == 0
    assert report["audit"]["expected"] > blobs  # the app wrote blobs of its own throughout
    assert report["audit"]["app_settings_old_store"] is False
    assert report["verify"]["clean"] is True
    # Only the main port is left, and the audit through the app's settings (proxy:8080 for
    # the Riak CS target) found every blob: it reaches the new store.
    assert report["proxy"] == {"8080_listening": True, "8081_listening": False}
    assert out.rstrip().splitlines()[-1] == f"report: {tmp_path / 'report.json'}"
