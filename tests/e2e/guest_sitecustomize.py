"""Installed as sitecustomize in the test guests: reports how the guest tool touches devices.

With E2E_TRACE set, Python's audit hooks report every os.open/open() of a
device node with its flags, and every listing of /sys/block, on stderr.
That shows from outside the tool that it found the disk by scanning
/sys/block and opened it with O_DIRECT, whatever its own messages say.
"""

import os
import sys


def _trace(event, args):
    if event == "open":
        path, flags = args[0], args[2]
        if isinstance(path, bytes):
            path = path.decode(errors="replace")
        if isinstance(path, str) and path.startswith("/dev/") and isinstance(flags, int):
            direct = "yes" if flags & os.O_DIRECT else "no"
            print(f"E2E-TRACE open {path} flags={flags:#o} o_direct={direct}", file=sys.stderr)
    elif event in ("os.listdir", "os.scandir"):
        path = args[0]
        if isinstance(path, bytes):
            path = path.decode(errors="replace")
        if isinstance(path, str) and path.rstrip("/").startswith("/sys/block"):
            print(f"E2E-TRACE list {path}", file=sys.stderr)


if os.environ.get("E2E_TRACE"):
    sys.addaudithook(_trace)
