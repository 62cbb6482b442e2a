#!/usr/bin/env python3
"""Deciding whether a VM's fragment can be reused: compare values, or hash them?

The renderer keeps each VM's last VmMetrics and reuses its rendered fragment
when the new one is equal. The alternative is to keep a CRC of the values
(crcmod) and compare CRCs. This measures both for 1000 VMs of the SAP set,
unchanged and with the CPU time changed, in microseconds per update.

    python benchmarks/fragment_reuse.py
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import crcmod.predefined  # noqa: E402

from vhostmd.model import Domain, Metric, VmMetrics  # noqa: E402

VMS = 1000
crc32 = crcmod.predefined.mkCrcFun("crc-32")


def vm(i: int, cpu: str) -> VmMetrics:
    d = Domain(i, f"vm{i}", f"5eed0000-0000-0000-0000-{i:012d}")
    return VmMetrics(d, (
        Metric("TotalCPUTime", "real64", cpu),
        Metric("ResourceProcessorLimit", "uint32", "2"),
        Metric("ResourceMemoryLimit", "uint64", "8192"),
        Metric("PhysicalMemoryAllocatedToVirtualSystem", "uint64", "4096"),
    ))


def values_crc(v: VmMetrics) -> int:
    text = "\0".join((str(v.domain.id), v.domain.name, v.domain.uuid,
                      *(f"{m.name}\0{m.type}\0{m.value}\0{m.unit or ''}" for m in v.metrics)))
    return crc32(text.encode())


def main() -> None:
    old = [vm(i, "123.000000") for i in range(VMS)]
    same = [vm(i, "123.000000") for i in range(VMS)]  # equal values, new objects
    changed = [vm(i, "124.000000") for i in range(VMS)]
    old_crcs = [values_crc(v) for v in old]
    cases = {
        "compare, unchanged": lambda: [a == b for a, b in zip(old, same)],
        "compare, CPU time changed": lambda: [a == b for a, b in zip(old, changed)],
        "crc32, unchanged": lambda: [c == values_crc(b) for c, b in zip(old_crcs, same)],
        "crc32, CPU time changed": lambda: [c == values_crc(b) for c, b in zip(old_crcs, changed)],
    }
    for name, func in cases.items():
        runs = timeit.repeat(func, number=20, repeat=5)
        print(f"{name:28s} {min(runs) / 20 * 1e6:8.0f} us per update ({VMS} VMs)")


if __name__ == "__main__":
    main()
