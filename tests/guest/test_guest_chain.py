"""The virtio chain as in a VM: host client -> QEMU's unix socket -> guest port.

The test plays QEMU: it listens on the channel socket where libvirt would
have QEMU listen, and bridges the connection to a pseudo-terminal whose
slave end the reader opens as its port. The host side is the real daemon
(for domains of libvirt's test driver), or a stand-in that replays the C
vhostmd's captured answer.
"""

import os
import select
import socket
import threading
import xml.etree.ElementTree as ET

from vhostmd_guest import request_metrics
from vhostmd_guest.channel import REQUEST

from guest_vectors import reference
from guest_host import pty_port
from support import config_xml, metric, start_vhostmd, stop, write_node


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


def _listen(channels, domain_id: int, name: str) -> socket.socket:
    """A channel socket where libvirt has QEMU listen for this domain."""
    directory = channels / f"domain-{domain_id}-{name}"
    directory.mkdir(parents=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(directory / "org.github.vhostmd.1"))
    listener.listen(1)
    return listener


def test_guest_reads_its_own_metrics_over_the_daemon_virtio_channel(tmp_path):
    vms = write_node(tmp_path / "node.xml", ["alpha", "beta"])
    channels = tmp_path / "channels"
    listeners = [_listen(channels, i, vm.name) for i, vm in enumerate(vms, start=1)]
    conf = tmp_path / "vhostmd.conf"
    conf.write_text(config_xml(
        metric("HostName", "echo host") + metric("VmName", "echo NAME", context="vm"),
        period=1, transports=("virtio",),
        virtio=f"<virtio><channel_path>{channels}</channel_path><max_channels>8</max_channels>"
               "<expiration_time>15</expiration_time></virtio>",
    ))
    daemon = start_vhostmd("-c", f"test://{tmp_path}/node.xml", "-f", str(conf))
    stop_bridge = threading.Event()
    try:
        with pty_port() as (qemu_fd, port):
            bridge = threading.Thread(target=qemu_bridge, args=(listeners[0], qemu_fd, stop_bridge),
                                      daemon=True)
            bridge.start()
            answer = request_metrics(port, timeout=20, use_pyserial=False)
            stop_bridge.set()
            bridge.join(5)
        assert answer.startswith(b"<metrics>\n") and answer.endswith(b"</metrics>\n\n")
        root = ET.fromstring(answer)
        assert {m.get("uuid") for m in root if m.get("context") == "vm"} == {vms[0].uuid}
        assert [m.findtext("value") for m in root if m.findtext("name") == "VmName"] == ["alpha"]
        assert [m.findtext("name") for m in root if m.get("context") == "host"] == ["HostName"]
        # The other guest, asking on its own channel, gets only its own.
        conn, _ = listeners[1].accept()
        with conn:
            conn.sendall(b"GET /metrics/XML\r\n\r\n")
            data = b""
            while not data.endswith(b"\n\n"):
                data += conn.recv(65536)
        assert vms[1].uuid.encode() in data and vms[0].uuid.encode() not in data
    finally:
        stop_bridge.set()
        stop(daemon)
        for listener in listeners:
            listener.close()
