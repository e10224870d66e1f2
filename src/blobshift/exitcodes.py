"""The exit codes every `blobshift` command shares (readiness and status add their own
meanings for 1 and 3, in their help)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_INCOMPLETE = 1  # blobs logged / problems found
EXIT_USAGE = 2  # bad input: settings, flags, manifest, checkpoint
EXIT_STORE = 3  # a store failed its preflight
EXIT_LOCKED = 4  # another run holds the shard's lock
EXIT_IO = 5  # the log dir cannot be written (disk full, permissions)
EXIT_STOPPED = 130
