"""Fixtures of the guest tests."""

import pytest

from guest_vectors import DOC, disk_image


@pytest.fixture
def make_disk(tmp_path):
    """Write a disk image to a file and return its path."""
    def make(content=DOC, name="vhostmd0", **kwargs):
        path = tmp_path / name
        path.write_bytes(disk_image(content, **kwargs))
        return path

    return make
