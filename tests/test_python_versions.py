"""The host package runs on Python 3.9, the oldest Python of the hosts it serves."""

import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "vhostmd"


def test_host_package_needs_no_python_newer_than_3_9():
    """vermin finds nothing in vhostmd/ that needs a Python newer than 3.9.

    (RHEL 9's python3 is 3.9; its python3-libvirt and python3-lxml are built
    for it.) The suite itself also runs under 3.9: see tools/test.
    """
    vermin = "import sys; from vermin.main import main; sys.exit(main())"
    result = subprocess.run(
        [sys.executable, "-c", vermin, "--no-config-file", "--target=3.9-", "--violations",
         "--eval-annotations", "--no-tips", str(PACKAGE)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300,
    )
    assert b"No module named 'vermin'" not in result.stderr, "install vermin to run this test"
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
