"""Fixtures of the end-to-end test: the host's prerequisites and one shared run of the guests."""

import pytest

from . import debian, prerequisites, scenario


@pytest.fixture(scope="session")
def host_ready():
    try:
        prerequisites.ensure_host()
    except debian.Unavailable as why:
        pytest.skip(f"QEMU guests cannot run here: {why}")


@pytest.fixture(scope="module")
def outcome(host_ready, tmp_path_factory):
    """Both guests booted once, against one libvirtd and one vhostmd; logs kept under pytest's tmp dir."""
    keep = tmp_path_factory.mktemp("e2e-logs")
    result = scenario.run(keep)
    print(f"\ne2e logs: {keep}")
    print("e2e timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items()))
    return result
