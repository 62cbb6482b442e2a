"""A writer for the cpio "newc" format, the one the kernel unpacks as an initramfs.

Written here rather than calling cpio(1) so that device nodes and root
ownership can be recorded without being root, and so the archive is
byte-for-byte reproducible (fixed owners, given mtimes).
"""

import stat
from typing import BinaryIO


class CpioWriter:
    def __init__(self, out: BinaryIO):
        self._out = out
        self._ino = 1
        self._dirs: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", mtime: int = 0,
               rdev: tuple[int, int] = (0, 0), nlink: int = 1) -> None:
        encoded = name.encode() + b"\0"
        fields = [
            self._ino, mode, 0, 0, nlink, mtime, len(data),
            0, 0, rdev[0], rdev[1], len(encoded), 0,
        ]
        self._ino += 1
        header = b"070701" + b"".join(b"%08x" % f for f in fields)
        self._out.write(header + encoded)
        self._pad(len(header) + len(encoded))
        self._out.write(data)
        self._pad(len(data))

    def _pad(self, length: int) -> None:
        self._out.write(b"\0" * (-length % 4))

    def _parents(self, path: str) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            self.directory("/".join(parts[:i]))

    @staticmethod
    def _clean(path: str) -> str:
        return path.strip("/")

    def directory(self, path: str, mode: int = 0o755) -> None:
        path = self._clean(path)
        if not path or path in self._dirs:
            return
        self._parents(path)
        self._dirs.add(path)
        self._entry(path, stat.S_IFDIR | mode, nlink=2)

    def file(self, path: str, data: bytes, mode: int = 0o644, mtime: int = 0) -> None:
        path = self._clean(path)
        self._parents(path)
        self._entry(path, stat.S_IFREG | mode, data, mtime)

    def symlink(self, path: str, target: str) -> None:
        path = self._clean(path)
        self._parents(path)
        self._entry(path, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        path = self._clean(path)
        self._parents(path)
        self._entry(path, stat.S_IFCHR | mode, rdev=(major, minor))

    def close(self) -> None:
        self._entry("TRAILER!!!", 0, nlink=1)
