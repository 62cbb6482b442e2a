"""A minimal vm-dump-metrics used only while the guest package is absent from this checkout."""

import errno
import mmap
import os
import select
import struct
import sys
import time

PORT = "/dev/virtio-ports/org.github.vhostmd.1"


def log(msg):
    if "-v" in sys.argv:
        print(msg, file=sys.stderr)


def vbd():
    for name in sorted(os.listdir("/sys/block")):
        dev = f"/dev/{name}"
        try:
            fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
        except OSError as e:
            log(f"{dev}: {e}")
            continue
        try:
            buf = mmap.mmap(-1, 4096)
            if os.readv(fd, [buf]) < 16 or buf[:4] != b"mvbd":
                continue
            _, busy, _, length = struct.unpack(">4sIII", buf[:16])
            size = (16 + length + 4095) // 4096 * 4096
            big = mmap.mmap(-1, size)
            os.lseek(fd, 0, 0)
            os.readv(fd, [big])
            log(f"metrics disk {dev} (O_DIRECT), {length} bytes")
            sys.stdout.buffer.write(big[16:16 + length])
            return 0
        finally:
            os.close(fd)
    return 1


def virtio():
    fd = os.open(PORT, os.O_RDWR | os.O_NONBLOCK)
    deadline = time.monotonic() + 5
    request = b"GET /metrics/XML\n\n"
    while request:
        try:
            request = request[os.write(fd, request):]
        except OSError as e:
            if e.errno != errno.EAGAIN or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    data = b""
    while not data.endswith(b"\n\n") and time.monotonic() < deadline:
        select.select([fd], [], [], 0.5)
        try:
            data += os.read(fd, 65536)
        except BlockingIOError:
            pass
    sys.stdout.buffer.write(data)
    return 0 if data.endswith(b"\n\n") else 1


def main():
    return vbd() if "--vbd" in sys.argv or "-b" in sys.argv else virtio()


if __name__ == "__main__":
    sys.exit(main())
