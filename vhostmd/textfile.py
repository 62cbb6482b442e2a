"""``--prometheus-file``: the health exposition, replaced atomically after every update.

node_exporter's textfile collector reads every ``*.prom`` file of its
directory on each scrape; a file it reads half-written is an error for the
whole scrape. So the text goes to a temporary file in the same directory
(named without ``.prom``, so the collector never reads it) and is renamed
over the old one: a reader sees the old or the new file, never a mix.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .files import FileRefused, open_regular

log = logging.getLogger(__name__)

FILE_MODE = 0o644


class PrometheusFile:
    """Writes one file atomically; a failure is logged when it starts and when it clears.

    Writing it never raises: it is a side channel, and publishing the
    metrics to guests must not depend on it.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._failing = False

    def write(self, text: str) -> bool:
        """Replace the file with *text*; False (and nothing left behind) on failure."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            fd = open_regular(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            try:
                os.fchmod(fd, FILE_MODE)
                data = text.encode()
                while data:
                    data = data[os.write(fd, data):]
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except (OSError, FileRefused) as err:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if not self._failing:
                log.warning("cannot write the Prometheus file %s: %s",
                            self.path, getattr(err, "strerror", None) or err)
                self._failing = True
            return False
        if self._failing:
            log.info("the Prometheus file %s is written again", self.path)
            self._failing = False
        return True
