"""Grouped reads against documents the real daemon wrote with the shipped configurations."""

import pytest

from vhostmd_guest import DiskReader, SapHostMetrics, SapVmMetrics
from vhostmd_guest.groups import SAP_HOST_METRIC_NAMES, SAP_VM_METRIC_NAMES

from docs_examples import published_disk


@pytest.fixture(scope="module")
def sap_disk(tmp_path_factory):
    return published_disk("conf/vhostmd.conf", tmp_path_factory.mktemp("sap"))


@pytest.fixture(scope="module")
def upstream_disk(tmp_path_factory):
    return published_disk("conf/vhostmd-upstream.conf", tmp_path_factory.mktemp("upstream"))


def test_sap_groups_fill_every_field_from_the_shipped_default(sap_disk):
    reader = DiskReader(str(sap_disk.path))
    host = reader.sap_host()
    assert isinstance(host, SapHostMetrics) and None not in host
    assert len(SAP_HOST_METRIC_NAMES) == len(host._fields)
    assert host.number_of_physical_cpus >= 1 and isinstance(host.total_cpu_time, float)
    assert isinstance(host.host_name, str) and host.host_name
    vm = reader.sap_vm(sap_disk.uuid)
    assert isinstance(vm, SapVmMetrics) and None not in vm
    assert len(SAP_VM_METRIC_NAMES) == len(vm._fields)
    # test:///default's one domain: 2 vCPUs, 8 GiB maximum, 2 GiB current.
    assert (vm.resource_processor_limit, vm.resource_memory_limit,
            vm.physical_memory_allocated_to_virtual_system) == (2, 8192, 2048)
    # One VM on the disk: the uuid may be left out.
    assert reader.sap_vm() == vm


def test_libmetrics_groups_fill_every_field_from_the_upstream_set(upstream_disk):
    reader = DiskReader(str(upstream_disk.path))
    memory = reader.host_memory()
    # The page rates appear from the daemon's second update on; --once made one.
    assert (memory.page_in_rate, memory.page_fault_rate) == (None, None)
    assert None not in memory[:5] and None not in reader.host_cpu()
    assert reader.vm_cpu(upstream_disk.uuid).total_cpu_time is not None


def test_a_group_needs_the_set_it_was_made_for(sap_disk, upstream_disk):
    # What the documentation warns about: the names differ between the sets.
    sap = DiskReader(str(sap_disk.path))
    assert sap.host_memory().total_physical_memory is None
    assert sap.host_cpu().total_phys_cpus is None
    upstream = DiskReader(str(upstream_disk.path))
    assert upstream.sap_host().free_physical_memory is None
    assert upstream.sap_vm().resource_memory_limit is None
