"""The virtio chain as in a VM: host client -> QEMU's unix socket -> guest port.

The test plays QEMU: it listens on the channel socket where libvirt would
have QEMU listen, and bridges the connection to a pseudo-terminal whose
slave end the reader opens as its port. The host side here is a stand-in
that speaks the protocol of the daemon's virtio transport.
"""

import os
import select
import socket
import threading

from vhostmd_guest import request_metrics
from vhostmd_guest.channel import REQUEST

from guest_vectors import reference
from guest_host import pty_port


def qemu_bridge(listener, master, stop):
    """Accept the host's connection and copy bytes both ways with the pty."""
    conn, _ = listener.accept()
    with conn:
        while not stop.is_set():
            ready, _, _ = select.select([conn, master], [], [], 0.05)
            if conn in ready:
                data = conn.recv(65536)
                if not data:
                    return
                os.write(master, data)
            if master in ready:
                try:
                    conn.sendall(os.read(master, 65536))
                except BlockingIOError:
                    pass


def stand_in_host(socket_path, answer):
    """Connect to the channel socket and answer one request, as vhostmd does."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(socket_path)
        request = b""
        while not request.endswith(b"\n\n"):
            chunk = sock.recv(512)
            if not chunk:
                return
            request += chunk
        assert request == REQUEST
        for start in range(0, len(answer), 100):
            sock.sendall(answer[start:start + 100])
        sock.recv(1)  # wait for the guest side to go away


def test_request_through_qemu_socket_and_pty(tmp_path):
    channel_dir = tmp_path / "domain-1-vm1"
    channel_dir.mkdir()
    socket_path = str(channel_dir / "org.github.vhostmd.1")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(1)
    stop = threading.Event()
    answer = reference("c-vhostmd-virtio-answer.txt").read_bytes()
    with listener, pty_port() as (qemu_fd, port):
        bridge = threading.Thread(target=qemu_bridge, args=(listener, qemu_fd, stop), daemon=True)
        host = threading.Thread(target=stand_in_host, args=(socket_path, answer), daemon=True)
        bridge.start()
        host.start()
        try:
            assert request_metrics(port, timeout=5, use_pyserial=False) == answer
        finally:
            stop.set()
            bridge.join(2)
