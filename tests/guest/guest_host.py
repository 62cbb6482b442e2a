"""A pretend host for the virtio tests: serves one exchange on a pty or socket."""

import contextlib
import os
import select
import threading
import time
import tty


class FakeHost:
    """Plays the host end of a metrics channel on file descriptor ``fd``.

    It reads until the request's blank line, then sends ``answer`` in
    ``pieces`` fragments (or nothing when ``answer`` is None).
    """

    def __init__(self, fd, answer, pieces=1, delay=0.0, start_after=0.0):
        self.fd = fd
        self.answer = answer
        self.pieces = pieces
        self.delay = delay
        self.start_after = start_after
        self.request = b""
        self.error = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            time.sleep(self.start_after)
            deadline = time.monotonic() + 5
            while not self.request.endswith(b"\n\n") and time.monotonic() < deadline:
                ready, _, _ = select.select([self.fd], [], [], 0.05)
                if ready:
                    self.request += os.read(self.fd, 4096)
            if self.answer is None:
                return
            step = max(1, -(-len(self.answer) // self.pieces))
            for start in range(0, len(self.answer), step):
                self._send(self.answer[start:start + step])
                time.sleep(self.delay)
        except OSError as err:
            self.error = err

    def _send(self, data):
        while data:
            try:
                data = data[os.write(self.fd, data):]
            except BlockingIOError:
                select.select([], [self.fd], [], 0.05)

    def join(self):
        self._thread.join(6)
        return self.request


@contextlib.contextmanager
def pty_port():
    """A pseudo-terminal standing in for a port: yields (host fd, port path).

    The host end is raw and non-blocking; the port's path is the slave's.
    """
    master, slave = os.openpty()
    try:
        tty.setraw(master)
        os.set_blocking(master, False)
        yield master, os.ttyname(slave)
    finally:
        os.close(slave)
        os.close(master)
