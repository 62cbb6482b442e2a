"""Debian packages: install what the host lacks, fetch and unpack what the guest needs.

Host programs (QEMU, libvirtd, busybox) are installed with apt-get when
missing, because a fresh CI machine has none of them. Guest parts (the
kernel, the Python interpreter) are only downloaded and unpacked with
dpkg -x into the cache, so the host's own packages are never touched.
"""

import os
import shutil
import subprocess
from pathlib import Path

from .cache import subdir


class Unavailable(Exception):
    """What the test needs cannot be had on this machine."""


_APT_ENV = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")
_updated = False


def is_root() -> bool:
    return os.geteuid() == 0


def installed(package: str) -> bool:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package],
        capture_output=True, text=True, check=False,
    )
    return result.returncode == 0 and result.stdout.endswith("ok installed")


def _apt(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["apt-get", "-q", *args], cwd=cwd, env=_APT_ENV,
        capture_output=True, text=True, check=False,
    )


def apt_update() -> None:
    """Refresh the package lists once per run: a fresh machine has none, an old one stale ones."""
    global _updated
    if _updated:
        return
    result = _apt("update")
    if result.returncode != 0:
        raise RuntimeError(f"apt-get update failed:\n{result.stderr}")
    _updated = True


def ensure_installed(packages: list[str]) -> None:
    """Install the packages that are missing, or say why that cannot be done."""
    missing = [p for p in packages if not installed(p)]
    if not missing:
        return
    if not shutil.which("apt-get"):
        raise Unavailable(f"not a Debian system and missing: {' '.join(missing)}")
    if not is_root():
        raise Unavailable(f"missing Debian packages and not root to install them: {' '.join(missing)}")
    apt_update()
    # No recommends: QEMU's would pull in a whole desktop stack.
    result = _apt("install", "-y", "--no-install-recommends", *missing)
    if result.returncode != 0:
        raise RuntimeError(f"apt-get install {' '.join(missing)} failed:\n{result.stderr}")


def depends_of(package: str) -> list[str]:
    """Direct Depends of a package as the package lists know it (e.g. a kernel meta package)."""
    def query() -> list[str]:
        result = subprocess.run(
            ["apt-cache", "depends", "--important", package],
            capture_output=True, text=True, env=_APT_ENV, check=False,
        )
        if result.returncode != 0:
            return []
        return [line.split(":", 1)[1].strip() for line in result.stdout.splitlines()
                if line.strip().startswith("Depends:")]

    found = query()
    if not found:
        apt_update()
        found = query()
    if not found:
        raise RuntimeError(f"apt-cache knows no dependencies of {package}")
    return found


def candidate_version(package: str) -> str:
    result = subprocess.run(
        ["apt-cache", "policy", package], capture_output=True, text=True, env=_APT_ENV, check=False,
    )
    for line in result.stdout.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "Candidate" and value.strip() not in ("", "(none)"):
            return value.strip()
    if not _updated:
        apt_update()
        return candidate_version(package)
    raise RuntimeError(f"no installable version of {package}")


def unpacked(package: str) -> Path:
    """Download one package and unpack it with dpkg -x; cached by name and version.

    Returns the directory the package was unpacked into (its own root).
    """
    version = candidate_version(package)
    safe = f"{package}_{version}".replace(":", "%3a")
    root = subdir("debs") / safe
    done = root / ".unpacked"
    if done.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    download_dir = subdir("debs/download")
    for old in download_dir.glob(f"{package}_*.deb"):
        old.unlink()
    result = _apt("download", f"{package}={version}", cwd=download_dir)
    if result.returncode != 0:
        if not _updated:
            # Stale lists may name a version the mirror no longer has: refresh once, retry.
            apt_update()
            return unpacked(package)
        raise RuntimeError(f"apt-get download {package} failed:\n{result.stderr}")
    debs = sorted(download_dir.glob(f"{package}_*.deb"))
    if len(debs) != 1:
        raise RuntimeError(f"expected one downloaded .deb for {package}, found {debs}")
    root.mkdir(parents=True)
    subprocess.run(["dpkg", "-x", str(debs[0]), str(root)], check=True)
    debs[0].unlink()
    done.touch()
    return root
