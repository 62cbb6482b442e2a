"""The xenstore wire format, checked against the protocol's own definition."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, strategies as st

from vhostmd.publish.xenstore import wire
from vhostmd.publish.xenstore.wire import Access, Message, Op, Perms


def test_a_write_is_a_little_endian_header_then_path_nul_value():
    data = Message(Op.WRITE, 7, 3, wire.write_request("/local/domain/4/metrics", b"<m>\n\t</m>")).encode()
    # xsd_sockmsg: type, req_id, tx_id, len, each a little-endian uint32.
    assert struct.unpack("<4I", data[:16]) == (11, 7, 3, len(data) - 16)
    assert data[16:] == b"/local/domain/4/metrics\0<m>\n\t</m>"


def test_request_payloads_end_their_strings_with_nul():
    assert wire.read_request("/a/b") == b"/a/b\0"
    assert wire.get_domain_path_request(12) == b"12\0"
    assert wire.transaction_start_request() == b"\0"
    assert wire.transaction_end_request(True) == b"T\0"
    assert wire.transaction_end_request(False) == b"F\0"
    assert wire.set_perms_request("/x", ("n0", "r5")) == b"/x\0n0\0r5\0"


def test_the_payload_limit_is_4096_bytes():
    path = "/p"
    fits = wire.write_request(path, b"v" * (4096 - len(path) - 1))
    assert len(Message(Op.WRITE, 1, 0, fits).encode()) == 16 + 4096
    with pytest.raises(wire.ProtocolError, match="4097 bytes is over xenstore's limit of 4096"):
        Message(Op.WRITE, 1, 0, fits + b"v").encode()


def test_a_reply_announcing_more_than_the_limit_is_refused_before_reading_it():
    with pytest.raises(wire.ProtocolError, match="4097-byte payload"):
        wire.decode(struct.pack("<4I", 2, 1, 0, 4097))


def test_decode_waits_for_the_whole_message_and_keeps_what_follows():
    one = struct.pack("<4I", 2, 9, 0, 5) + b"hello"
    assert wire.decode(one[:10]) == (None, one[:10])
    assert wire.decode(one[:-1]) == (None, one[:-1])
    message, rest = wire.decode(one + b"\x0f")
    assert message == Message(2, 9, 0, b"hello")
    assert rest == b"\x0f"


def test_an_error_reply_names_the_errno():
    assert wire.error_name(b"E2BIG\0") == "E2BIG"
    err = wire.XenstoreError("ENOENT", Op.READ, "/local/domain/9/vm")
    assert str(err) == "xenstored refused READ /local/domain/9/vm: ENOENT"


def test_paths_with_a_nul_and_odd_domain_ids_are_refused():
    with pytest.raises(wire.ProtocolError):
        wire.read_request("/a\0b")
    with pytest.raises(wire.ProtocolError):
        wire.get_domain_path_request(-1)
    with pytest.raises(wire.ProtocolError):
        wire.get_domain_path_request(70000)


def test_permissions_owner_default_and_listed_domains():
    perms = Perms.parse(wire.strings_reply(b"n0\0r3\0"))
    assert (perms.owner, perms.default) == (0, Access.NONE)
    assert perms.access_of(0) is Access.BOTH  # the owner may do anything
    assert perms.access_of(3) is Access.READ
    assert perms.access_of(4) is Access.NONE
    assert str(perms) == "n0,r3"
    assert Perms.parse(("b5",)).access_of(6) is Access.BOTH
    with pytest.raises(wire.ProtocolError):
        Perms.parse(("x1",))


@given(op=st.sampled_from(list(Op)), req=st.integers(0, 2**32 - 1), tx=st.integers(0, 2**32 - 1),
       payload=st.binary(max_size=wire.PAYLOAD_MAX), tail=st.binary(max_size=40))
def test_encode_and_decode_round_trip(op, req, tx, payload, tail):
    message = Message(op, req, tx, payload)
    assert wire.decode(message.encode() + tail) == (message, tail)
