"""Metrics from xenstore, on Xen guests.

A Xen host running vhostmd with the ``xenstore`` transport writes each
domain's metrics (host metrics and that domain's own) to
``/local/domain/<domid>/metrics``. They are read here with the
``xenstore-read`` command of the guest's Xen tools.
"""

import re
import shutil
import subprocess
from typing import List

from .errors import XenstoreError

XENSTORE_READ = "xenstore-read"

_ESCAPE = re.compile(rb"\\(\\|[0-7]{3}|x[0-9a-fA-F]{2}|[ntr])")
_SIMPLE = {b"\\": b"\\", b"n": b"\n", b"t": b"\t", b"r": b"\r"}


def unescape(value: bytes) -> bytes:
    """Undo the escaping older ``xenstore-read`` applies without ``-R``.

    >>> unescape(rb"<metrics>\\n\\t<metric>\\134")
    b'<metrics>\\n\\t<metric>\\\\'
    """
    def one(match):
        code = match.group(1)
        if code in _SIMPLE:
            return _SIMPLE[code]
        if code[:1] == b"x":
            return bytes([int(code[1:], 16)])
        return bytes([int(code, 8) & 0xFF])

    return _ESCAPE.sub(one, value)


def _run(argv: List[str], timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise XenstoreError("{} took longer than {:g} s".format(" ".join(argv), timeout)) from None
    except OSError as err:
        raise XenstoreError("cannot run {}: {}".format(argv[0], err.strerror)) from None


def _read_key(command: str, key: str, timeout: float) -> bytes:
    raw = _run([command, "-R", key], timeout)
    if raw.returncode == 0:
        # -R prints the value as it is, with no newline after it.
        return raw.stdout
    plain = _run([command, key], timeout)
    if plain.returncode != 0:
        # One line, whatever the tool printed: messages are one line per source.
        lines = plain.stderr.decode("utf-8", "replace").split("\n")
        message = "; ".join(line.strip() for line in lines if line.strip()) or (
            "exit status {}".format(plain.returncode)
        )
        raise XenstoreError("xenstore key {} cannot be read: {}".format(key, message))
    # Without -R the value is escaped and followed by a newline.
    value = plain.stdout[:-1] if plain.stdout.endswith(b"\n") else plain.stdout
    return unescape(value)


def read_xenstore(timeout: float = 5.0, command: str = XENSTORE_READ) -> bytes:
    """The metrics document this domain finds in xenstore.

    Raises :class:`XenstoreError` when this is not a Xen guest (no
    ``xenstore-read``, or it cannot reach xenstore) or the key is missing.
    """
    found = shutil.which(command)
    if found is None:
        raise XenstoreError(
            "not a Xen guest: {} was not found (install the Xen guest tools)".format(command)
        )
    domid = _read_key(found, "domid", timeout).strip().decode("ascii", "replace")
    if not domid.isdigit():
        raise XenstoreError("xenstore gave an odd domain id {!r}".format(domid))
    return _read_key(found, "/local/domain/{}/metrics".format(domid), timeout)
