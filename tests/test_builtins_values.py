"""The pure parts of the built-ins: parsers of /proc, rates, value formatting."""

from __future__ import annotations

import pytest

from vhostmd.collect import builtins, host_sources as hs
from vhostmd.collect.builtins.host import HostView
from vhostmd.collect.host_sources import HostSample, NotYetAvailable, SourceUnavailable
from vhostmd.metric_types import BadValue, format_value

MEMINFO = """MemTotal:       16000000 kB
MemFree:         2000000 kB
MemAvailable:   10000000 kB
Buffers:          100000 kB
Cached:          5000000 kB
SReclaimable:     300000 kB
SwapTotal:       4000000 kB
SwapFree:        3000000 kB
"""


def test_meminfo_gives_free_1_columns():
    mem = hs.parse_meminfo(MEMINFO)
    assert mem.used == 6000000  # total - available
    assert mem.swap_used == 1000000
    old = hs.parse_meminfo(MEMINFO.replace("MemAvailable:   10000000 kB\n", ""))
    assert old.used == 16000000 - 2000000 - 100000 - 5000000 - 300000


def test_meminfo_without_memtotal_names_the_field():
    with pytest.raises(ValueError, match="MemTotal"):
        hs.parse_meminfo("MemFree: 1 kB\n")


def test_stat_cpu_line():
    cpu = hs.parse_stat("cpu  10 20 30 40 50 0 0\ncpu0 1 2 3 4 5 0 0\n")
    assert (cpu.user, cpu.nice, cpu.system, cpu.idle) == (10, 20, 30, 40)


def test_unreadable_proc_file_is_named(tmp_path):
    with pytest.raises(SourceUnavailable, match=f"{tmp_path}/vmstat"):
        hs.read_proc(hs.VMSTAT, tmp_path)
    (tmp_path / "vmstat").write_text("pgpgin 1\n")
    with pytest.raises(SourceUnavailable, match="pgfault"):
        hs.read_proc(hs.VMSTAT, tmp_path)


def _sample(taken: float, pgpgin: int, pgfault: int) -> HostSample:
    vm = hs.VmStat(pgpgin=pgpgin, pgpgout=0, pswpin=0, pswpout=0, pgfault=pgfault)
    return HostSample(taken=taken, time=0.0, nodename="h", vmstat=vm)


def test_rates_are_per_second_between_updates():
    rates = builtins.REGISTRY["host.page_rates"].read
    view = HostView(_sample(15.0, 1500, 9000), previous=_sample(5.0, 1000, 4000))
    assert rates(view) == (50, 500)


def test_rate_waits_for_a_second_sample_and_skips_counter_resets():
    rate = builtins.REGISTRY["host.page_in_rate"].read
    with pytest.raises(NotYetAvailable):
        rate(HostView(_sample(1.0, 10, 10)))
    with pytest.raises(SourceUnavailable, match="backwards"):
        rate(HostView(_sample(2.0, 5, 10), previous=_sample(1.0, 10, 10)))


def test_format_value_checks_the_metric_type():
    assert format_value("uint32", 7) == "7"
    assert format_value("real64", 1.5) == "1.500000"
    assert format_value("real64", 3) == "3"
    assert format_value("string", 2.25) == "2.250000"
    with pytest.raises(BadValue, match="out of range for uint32"):
        format_value("uint32", 2**32)
    with pytest.raises(BadValue, match="control character"):
        format_value("string", "a\x01b")


def test_hypervisor_version_as_virsh_prints_it():
    assert hs.Hypervisor("QEMU", 8_002_001).product == "QEMU 8.2.1"


def test_os_release_name():
    assert hs.parse_os_release('ID=debian\nNAME="Debian GNU/Linux"\n') == "Debian GNU/Linux"
    assert hs.parse_os_release("ID=alpine\n") == "alpine"
