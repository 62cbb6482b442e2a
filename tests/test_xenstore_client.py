"""The xenstore client against a real oxenstored, checked with the Xen tools."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from vhostmd.publish.xenstore import client as client_mod
from vhostmd.publish.xenstore.client import Client, ConnectionLost
from vhostmd.publish.xenstore.wire import Access, XenstoreError
from xenstored import xenstored, xenstored_kit  # noqa: F401  (fixtures)

UUID = "6f1c1a3e-8f63-4a6c-9d57-0d7a1c2b3e4f"


def test_socket_path_follows_the_xen_tools_rules():
    assert client_mod.socket_path({"XENSTORED_PATH": "/x/s", "XENSTORED_RUNDIR": "/r"}) == "/x/s"
    assert client_mod.socket_path({"XENSTORED_RUNDIR": "/r"}) == "/r/socket"
    assert client_mod.socket_path({}) == "/var/run/xenstored/socket"


def test_write_read_and_the_tools_agree(xenstored):
    value = b"<metrics>\n\t<a>&amp;</a>\n</metrics>\n"
    with Client(str(xenstored.socket)) as xs:
        xs.write("/test/metrics", value)
        assert xs.read("/test/metrics") == value
    # Newlines and tabs survive: the raw value is byte for byte what was written.
    assert xenstored.read("/test/metrics") == value
    xenstored.write("/test/other", "from the tool")
    with Client(str(xenstored.socket)) as xs:
        assert xs.read("/test/other") == b"from the tool"
        assert set(xs.directory("/test")) == {"metrics", "other"}


def test_client_finds_xenstored_through_XENSTORED_PATH(xenstored, monkeypatch):
    monkeypatch.setenv("XENSTORED_PATH", str(xenstored.socket))
    with Client() as xs:
        assert xs.read("/tool/xenstored").endswith(b"oxenstored")
        assert xs.connected_to == str(xenstored.socket)


def test_domain_path_and_permissions_as_libxl_sets_them(xenstored):
    xenstored.add_domain(3, UUID, "web1")
    with Client(str(xenstored.socket)) as xs:
        home = xs.get_domain_path(3)
        assert home == "/local/domain/3"
        assert xs.read(f"{home}/vm") == f"/vm/{UUID}".encode()
        perms = xs.get_perms(home)
        assert str(perms) == "n0,r3" == xenstored.perms(home)
        assert perms.access_of(3) is Access.READ
        # A node written by dom0 inherits its parent's permissions.
        xs.write(f"{home}/metrics", b"x")
        assert str(xs.get_perms(f"{home}/metrics")) == "n0,r3" == xenstored.perms(f"{home}/metrics")


def test_refusals_name_the_errno_and_keep_the_connection(xenstored):
    with Client(str(xenstored.socket)) as xs:
        with pytest.raises(XenstoreError) as missing:
            xs.read("/local/domain/42/vm")
        assert missing.value.errno == "ENOENT"
        assert "/local/domain/42/vm" in str(missing.value)
        # oxenstored's quota: 2048 bytes accepted, 2049 refused.
        xs.write("/big", b"v" * 2048)
        with pytest.raises(XenstoreError) as big:
            xs.write("/big", b"v" * 2049)
        assert big.value.errno == "E2BIG"
        assert xs.connected
        assert xs.read("/big") == b"v" * 2048


def test_a_transaction_that_lost_a_race_is_refused_with_eagain(xenstored):
    xenstored.add_domain(5, UUID, "db")
    with Client(str(xenstored.socket)) as xs:
        tx = xs.transaction_start()
        assert xs.read("/local/domain/5/vm", tx) == f"/vm/{UUID}".encode()
        xenstored.remove_domain(5)  # libxl destroys the domain meanwhile
        xs.write("/local/domain/5/metrics", b"late", tx)
        assert xs.transaction_end(tx) is False
        # Retried, the check sees the domain gone; nothing was created.
        tx = xs.transaction_start()
        with pytest.raises(XenstoreError):
            xs.read("/local/domain/5/vm", tx)
        assert xs.transaction_end(tx, commit=False) is True
    assert not xenstored.exists("/local/domain/5")


def test_a_committed_transaction_is_visible_to_the_tools(xenstored):
    with Client(str(xenstored.socket)) as xs:
        tx = xs.transaction_start()
        xs.write("/t/a", b"1", tx)
        assert not xenstored.exists("/t/a")  # not before the commit
        assert xs.transaction_end(tx) is True
    assert xenstored.read("/t/a") == b"1"


def test_a_stopped_xenstored_is_a_lost_connection_and_a_new_one_reconnects(xenstored):
    xs = Client(str(xenstored.socket), timeout=2)
    xs.write("/a", b"1")
    xenstored.restart()
    with pytest.raises(ConnectionLost, match="xenstored at .*socket"):
        xs.read("/a")
    assert not xs.connected
    # The next request connects again (the restarted store is empty).
    with pytest.raises(XenstoreError):
        xs.read("/a")
    xs.write("/a", b"2")
    assert xenstored.read("/a") == b"2"
    xenstored.stop()
    with pytest.raises(ConnectionLost, match="lost the connection"):
        xs.read("/a")
    with pytest.raises(ConnectionLost, match="cannot connect to xenstored at .*socket"):
        xs.read("/a")


def test_a_xenstored_that_never_answers_costs_one_timeout(tmp_path):
    path = str(tmp_path / "socket")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen()
    held = []
    threading.Thread(target=lambda: held.append(server.accept()), daemon=True).start()
    xs = Client(path, timeout=0.5, device=str(tmp_path / "no-xenbus"))
    started = time.monotonic()
    with pytest.raises(ConnectionLost, match="did not answer READ within 0.5 s"):
        xs.read("/a")
    assert time.monotonic() - started < 5
    assert not xs.connected
    server.close()


def test_without_socket_or_device_the_error_names_the_socket(tmp_path):
    xs = Client(str(tmp_path / "missing"), timeout=0.5, device=str(tmp_path / "absent"))
    with pytest.raises(ConnectionLost, match=r"cannot connect to xenstored at .*missing"):
        xs.read("/a")


def test_the_device_is_tried_only_without_XENSTORED_PATH(tmp_path, monkeypatch):
    device = tmp_path / "xenbus"
    device.write_bytes(b"")  # stands in for the device: it can be opened
    monkeypatch.delenv("XENSTORED_PATH", raising=False)
    monkeypatch.setenv("XENSTORED_RUNDIR", str(tmp_path))
    fallback = Client(device=str(device))
    fallback.connect()
    assert fallback.connected_to == str(device)
    fallback.close()
    # A path that is set, by $XENSTORED_PATH or by the caller, is the only one.
    monkeypatch.setenv("XENSTORED_PATH", str(tmp_path / "missing"))
    with pytest.raises(ConnectionLost, match="cannot connect to xenstored at .*missing"):
        Client(device=str(device)).connect()
    with pytest.raises(ConnectionLost, match="cannot connect to xenstored at .*missing"):
        Client(str(tmp_path / "missing"), device=str(device)).connect()
