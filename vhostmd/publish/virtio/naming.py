"""libvirt's naming of virtio channel sockets, and the one channel name.

For a VM with a channel ``org.github.vhostmd.1`` (:data:`CHANNEL_NAME`,
which ``vhostmd attach`` adds to a domain), QEMU listens on a unix socket
``<channel_path>/<id>-<name>/org.github.vhostmd.1`` (older libvirt:
``domain-<id>-<name>/``; the name cut to 20 characters).
"""

from __future__ import annotations

import os
import re

#: The channel's name: ``<target type='virtio' name='org.github.vhostmd.1'/>``,
#: and the name of the socket QEMU creates for it.
CHANNEL_NAME = "org.github.vhostmd.1"
#: libvirt cuts the domain name in channel directory names to this many characters.
SHORT_NAME_MAX = 20

_DIR_NAME = re.compile(rb"(?:domain-)?([0-9]+)-(.+)", re.DOTALL)


def parse_channel_dir(name: bytes) -> tuple[int, bytes] | None:
    """``(id, name part)`` of a channel directory name, or None if it is not one."""
    match = _DIR_NAME.fullmatch(name)
    if match is None or len(match.group(1)) > 10:
        return None
    return int(match.group(1)), match.group(2)


def name_matches(part: bytes, domain_name: str) -> bool:
    """Whether a directory's name part is the domain's name as libvirt writes it.

    libvirt writes the name cut to 20 characters (newer versions) or 20 bytes
    (older ones, and any version in a non-UTF-8 locale); very old versions
    wrote it whole.
    """
    full = os.fsencode(domain_name)
    return part in (full, full[:SHORT_NAME_MAX], os.fsencode(domain_name[:SHORT_NAME_MAX]))
