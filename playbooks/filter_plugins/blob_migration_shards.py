"""Which django_manage host runs which backfill shard, lost hosts included.

Shard I/N belongs to the host at index I of [django_manage] (N: the group's size). A lost
host's shard keeps its I/N (same keys, same ranges, same checkpoint name) and is run by
the next surviving host after it in the group's order, wrapping around: a survivor may
run two or more shards, its own first.
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError


def blob_migration_runs(group: list[str], lost: list[str]) -> list[dict[str, Any]]:
    """Every shard, in shard order: {shard, home, runner, taken_over_from}."""
    group, lost = list(group), list(lost or [])
    strangers = [h for h in lost if h not in group]
    if strangers:
        raise AnsibleFilterError(f"lost hosts not in [django_manage]: {', '.join(strangers)}")
    survivors = [h for h in group if h not in lost]
    if not survivors:
        raise AnsibleFilterError("every django_manage host is lost: no host can run a shard")
    runs: list[dict[str, Any]] = []
    for index, home in enumerate(group):
        runner = home
        if home in lost:
            after = group[index + 1 :] + group[:index]
            runner = next(h for h in after if h not in lost)
        runs.append(
            {
                "shard": f"{index}/{len(group)}",
                "home": home,
                "runner": runner,
                "taken_over_from": home if runner != home else None,
            }
        )
    # A survivor's own shard first, then the ones it took over.
    return sorted(
        runs, key=lambda r: (r["taken_over_from"] is not None, int(r["shard"].split("/")[0]))
    )


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"blob_migration_runs": blob_migration_runs}
