#!/usr/bin/env python3
"""What the per-update check of the metrics disks costs.

Every update, each disk checks that its path still names the file it has
open (one stat relative to its directory; the shared disk also stats its
directory). This creates N per-VM disks and one shared disk in a fresh
directory and reports the CPU time of those checks per update.

Usage (from the repository root; the directory defaults to /dev/shm):

    python benchmarks/disk_check.py --disks 200 --rounds 200
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vhostmd.publish.disk import MetricsDisk  # noqa: E402
from vhostmd.files import open_directory  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--disks", type=int, default=200, help="per-VM disks (default 200)")
    parser.add_argument("--rounds", type=int, default=200, help="updates measured (default 200)")
    parser.add_argument("--dir", default="/dev/shm", help="where to create them (default /dev/shm)")
    args = parser.parse_args()
    top = Path(tempfile.mkdtemp(prefix="vhostmd-bench-", dir=args.dir))
    try:
        fd = open_directory(top, owners={os.geteuid()}, sticky_ok=False)
        disks = [MetricsDisk(top / f"{i:08x}-0000-4000-8000-000000000000", 4096, dir_fd=fd)
                 for i in range(args.disks)]
        shared = MetricsDisk(top / "vhostmd0", 4096)
        per_vm, one = [], []
        for _ in range(args.rounds):
            start = time.process_time()
            for disk in disks:
                disk.check()
            per_vm.append(time.process_time() - start)
            start = time.process_time()
            for _ in range(100):
                shared.check()
            one.append((time.process_time() - start) / 100)
        print(f"{args.disks} per-VM disks: {statistics.median(per_vm) * 1e3:.2f} ms CPU per update "
              f"({statistics.median(per_vm) / args.disks * 1e6:.1f} us per disk); "
              f"shared disk: {statistics.median(one) * 1e6:.1f} us CPU per update")
    finally:
        shutil.rmtree(top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
