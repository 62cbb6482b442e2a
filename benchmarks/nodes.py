"""libvirt test-driver node files with many running domains.

``test:///PATH`` opens a private test hypervisor whose state comes from the
node file at PATH; every ``<domain type='test'>`` in it is running, with ids
1..N in file order.
"""

from __future__ import annotations

import uuid as uuid_mod
from pathlib import Path

_DOMAIN = """  <domain type='test'>
    <name>{name}</name>
    <uuid>{uuid}</uuid>
    <memory unit='KiB'>{max_kib}</memory>
    <currentMemory unit='KiB'>{cur_kib}</currentMemory>
    <vcpu>{vcpus}</vcpu>
    <os><type>hvm</type></os>
  </domain>
"""


def domain_uuid(index: int) -> str:
    """A fixed UUID for the domain numbered *index* (stable across runs)."""
    return str(uuid_mod.UUID(int=0x5EED_0000_0000_0000_0000_0000_0000_0000 + index))


def node_xml(count: int, prefix: str = "vm") -> str:
    """A node document with *count* running domains named prefix1..prefixN.

    Domain *i* has ``i % 4 + 1`` vCPUs, ``(i % 8 + 1)`` GiB maximum memory and
    half of that as current memory, so that the built-ins' values differ.
    """
    parts = ["<node>\n"]
    for i in range(1, count + 1):
        max_kib = (i % 8 + 1) * 1024 * 1024
        parts.append(_DOMAIN.format(
            name=f"{prefix}{i}", uuid=domain_uuid(i), max_kib=max_kib,
            cur_kib=max_kib // 2, vcpus=i % 4 + 1,
        ))
    parts.append("</node>\n")
    return "".join(parts)


def write_node(directory: Path, count: int, prefix: str = "vm") -> str:
    """Write a node file with *count* domains into *directory*; return its URI."""
    path = Path(directory).resolve() / f"node-{count}.xml"
    path.write_text(node_xml(count, prefix))
    return f"test://{path}"
