"""Run one command and write its resource usage as JSON: `spawn.py OUT.json ARGV...`.

ru_maxrss of an exec'd child starts at the RSS of the process that forked it (Linux
carries the forking process's high-water mark across exec). The benchmark process holds
~100 MB, so it starts every tool through this small interpreter (-I -S, ~10 MB): the
tool's peak RSS is then its own as long as it exceeds that floor.
"""

import json
import os
import sys
import time


def main() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - started
    result = {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "user": usage.ru_utime,
        "system": usage.ru_stime,
        "maxrss_kib": usage.ru_maxrss,
        "returncode": os.waitstatus_to_exitcode(status),
    }
    with open(out, "w") as fh:
        json.dump(result, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
