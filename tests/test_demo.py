"""`make demo` stays working: the same flow with a small seed."""

from __future__ import annotations

import json

from conftest import BASE_PORT

from blobshift.lab import demo


def test_demo_small_run_is_clean_and_audited(tmp_path, capsys):
    code = demo.main(
        ["--blobs", "300", "--out", str(tmp_path / "out"), "--base-port", str(BASE_PORT + 40)]
    )
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert code == 0, out
    assert report["backfill"]["copied"] == 294  # 300 seeded, 6 deleted by the app
    assert report["backfill"]["logged"] == 6
    assert report["check_blob_logs"]["Not referenced"] == 6
    assert report["verify"]["clean"] is True
    assert report["audit"] == {"expected": 319, "missing_or_different": 0, "keys": []}
    assert out.rstrip().splitlines()[-1] == f"report: {tmp_path / 'out' / 'report.json'}"
    assert demo.OLD_CREDS[1] not in out
