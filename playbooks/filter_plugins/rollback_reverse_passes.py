"""Whether a reverse pass of the rollback is clean (playbooks/rollback_reverse_pass.yml).

A live app deletes some of its blobs during every pass: a blob listed by the pass and
deleted before its copy is logged as gone from the source, and the next pass no longer
lists it. A blob that cannot be copied is logged by every pass.
"""

from __future__ import annotations

from typing import Any

# blobshift.backfill.GONE_FROM_SOURCE (the controller needs no engine to run this filter;
# tests/modules/test_rollback_passes.py checks that the two agree).
GONE_FROM_SOURCE = "not found in old db"


def rollback_reverse_pass_clean(
    records: list[dict[str, Any]], logged: int, passes_before: int, logged_before: list[str]
) -> bool:
    """Clean: the pass logged nothing; or, after a first pass, every blob it logged (all
    `logged` of them read in `records`) was gone from its source when its copy came, and
    none was logged by the pass before (whose blobs this pass then did not log again)."""
    if logged == 0:
        return True
    if passes_before == 0 or len(records) != logged:
        return False
    again = {r.get("blob_key") for r in records} & set(logged_before)
    return not again and all(r.get("error") == GONE_FROM_SOURCE for r in records)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"rollback_reverse_pass_clean": rollback_reverse_pass_clean}
