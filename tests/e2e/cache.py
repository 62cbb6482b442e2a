"""Where downloaded packages and built images are kept between runs."""

import contextlib
import fcntl
import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache root, created on first use.

    VHOSTMD_E2E_CACHE wins so CI can point it at a directory it keeps;
    otherwise the XDG cache directory, as any desktop tool would use.
    """
    explicit = os.environ.get("VHOSTMD_E2E_CACHE")
    if explicit:
        root = Path(explicit)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = Path(base) / "vhostmd-e2e"
    root.mkdir(parents=True, exist_ok=True)
    return root


def subdir(name: str) -> Path:
    path = cache_dir() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def locked():
    """Hold the cache for one run's downloads and builds, so runs side by side don't mix them."""
    with open(cache_dir() / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
