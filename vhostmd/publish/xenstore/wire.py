"""The xenstore wire protocol, without I/O.

Every message, request or reply, is a 16-byte header of four little-endian
32-bit words (type, request id, transaction id, payload length) followed by
the payload. Payloads are at most 4096 bytes. Strings in a payload end with
a NUL, except a value written or read, which is the rest of the payload.
A request that fails is answered by an ``ERROR`` message whose payload is an
errno name (``ENOENT``, ``EACCES``, ``E2BIG``...) and a NUL.

Permissions are strings such as ``n0`` or ``r3``: a letter (``n`` none,
``r`` read, ``w`` write, ``b`` both) and a domain id. The first names the
node's owner (who may do everything) and, by its letter, what every domain
not listed may do; the others grant domains access.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

HEADER = struct.Struct("<IIII")
HEADER_SIZE = HEADER.size
#: The largest payload xenstored accepts or sends (path, NUL and value of a write).
PAYLOAD_MAX = 4096
#: The transaction id of a request outside any transaction.
NO_TRANSACTION = 0


class Op(enum.IntEnum):
    """Message types (the ``xsd_sockmsg_type`` values every xenstored uses)."""

    CONTROL = 0
    DIRECTORY = 1
    READ = 2
    GET_PERMS = 3
    WATCH = 4
    UNWATCH = 5
    TRANSACTION_START = 6
    TRANSACTION_END = 7
    INTRODUCE = 8
    RELEASE = 9
    GET_DOMAIN_PATH = 10
    WRITE = 11
    MKDIR = 12
    RM = 13
    SET_PERMS = 14
    WATCH_EVENT = 15
    ERROR = 16
    IS_DOMAIN_INTRODUCED = 17
    RESUME = 18
    SET_TARGET = 19
    RESET_WATCHES = 21
    DIRECTORY_PART = 22


class ProtocolError(Exception):
    """Bytes that are not a xenstore message, or a request that cannot be sent."""


class XenstoreError(Exception):
    """xenstored refused a request: *errno* is the name it gave (``ENOENT``...)."""

    def __init__(self, errno: str, op: Op, path: str | None = None):
        self.errno = errno
        self.op = op
        self.path = path
        where = f" {path}" if path else ""
        super().__init__(f"xenstored refused {op.name}{where}: {errno}")


@dataclass(frozen=True)
class Message:
    """One message: a request we send or a reply xenstored sends."""

    op: int
    req_id: int
    tx_id: int
    payload: bytes

    def encode(self) -> bytes:
        if len(self.payload) > PAYLOAD_MAX:
            raise ProtocolError(
                f"{_name(self.op)} payload of {len(self.payload)} bytes is over "
                f"xenstore's limit of {PAYLOAD_MAX}"
            )
        return HEADER.pack(self.op, self.req_id, self.tx_id, len(self.payload)) + self.payload


def _name(op: int) -> str:
    try:
        return Op(op).name
    except ValueError:
        return f"message type {op}"


def parse_header(data: bytes) -> tuple[int, int, int, int]:
    """(type, request id, transaction id, payload length) from 16 header bytes.

    A length over the limit is refused here, before anything waits for or
    buffers that many bytes from a peer that may be broken.
    """
    if len(data) != HEADER_SIZE:
        raise ProtocolError(f"a xenstore header is {HEADER_SIZE} bytes, not {len(data)}")
    op, req_id, tx_id, length = HEADER.unpack(data)
    if length > PAYLOAD_MAX:
        raise ProtocolError(f"xenstored announced a {length}-byte payload, over the limit of {PAYLOAD_MAX}")
    return op, req_id, tx_id, length


def decode(data: bytes) -> tuple[Message | None, bytes]:
    """The first whole message in *data* and the bytes after it.

    ``(None, data)`` while the message is incomplete.
    """
    if len(data) < HEADER_SIZE:
        return None, data
    op, req_id, tx_id, length = parse_header(data[:HEADER_SIZE])
    end = HEADER_SIZE + length
    if len(data) < end:
        return None, data
    return Message(op, req_id, tx_id, data[HEADER_SIZE:end]), data[end:]


# --- payloads -----------------------------------------------------------------------


def _path(path: str) -> bytes:
    data = path.encode()
    if b"\0" in data:
        raise ProtocolError(f"xenstore path {path!r} contains a NUL")
    return data + b"\0"


def read_request(path: str) -> bytes:
    return _path(path)


def write_request(path: str, value: bytes) -> bytes:
    # The value is the rest of the payload: it may hold any byte, NUL included.
    return _path(path) + value


def get_perms_request(path: str) -> bytes:
    return _path(path)


def set_perms_request(path: str, perms: tuple[str, ...]) -> bytes:
    return _path(path) + b"".join(_path(p) for p in perms)


def get_domain_path_request(domid: int) -> bytes:
    if not 0 <= domid < 2**16:
        raise ProtocolError(f"{domid} is not a Xen domain id")
    return _path(str(domid))


def transaction_start_request() -> bytes:
    return b"\0"


def transaction_end_request(commit: bool) -> bytes:
    return b"T\0" if commit else b"F\0"


def string_reply(payload: bytes) -> str:
    """A reply holding one string (a domain path, a transaction id), NUL stripped."""
    return payload.split(b"\0", 1)[0].decode("utf-8", "replace")


def strings_reply(payload: bytes) -> tuple[str, ...]:
    """A reply holding NUL-terminated strings (permissions, directory entries)."""
    if not payload:
        return ()
    return tuple(s.decode("utf-8", "replace") for s in payload.rstrip(b"\0").split(b"\0"))


def error_name(payload: bytes) -> str:
    """The errno name of an ``ERROR`` reply."""
    return string_reply(payload) or "EINVAL"


# --- permissions --------------------------------------------------------------------


class Access(enum.Enum):
    NONE = "n"
    READ = "r"
    WRITE = "w"
    BOTH = "b"

    @property
    def writes(self) -> bool:
        return self in (Access.WRITE, Access.BOTH)

    @property
    def reads(self) -> bool:
        return self in (Access.READ, Access.BOTH)


@dataclass(frozen=True)
class Perm:
    """One permission string: ``r3`` is ``Perm(Access.READ, 3)``."""

    access: Access
    domid: int

    @classmethod
    def parse(cls, text: str) -> "Perm":
        try:
            return cls(Access(text[:1]), int(text[1:]))
        except ValueError:
            raise ProtocolError(f"{text!r} is not a xenstore permission") from None

    def __str__(self) -> str:
        return f"{self.access.value}{self.domid}"


@dataclass(frozen=True)
class Perms:
    """A node's permissions: its owner, the default, and the domains listed."""

    owner: int
    default: Access
    listed: tuple[Perm, ...] = ()

    @classmethod
    def parse(cls, texts: tuple[str, ...]) -> "Perms":
        if not texts:
            raise ProtocolError("a node's permissions cannot be empty")
        first = Perm.parse(texts[0])
        return cls(first.domid, first.access, tuple(Perm.parse(t) for t in texts[1:]))

    def access_of(self, domid: int) -> Access:
        """What domain *domid* may do with the node (its owner: everything)."""
        if domid == self.owner:
            return Access.BOTH
        for perm in self.listed:
            if perm.domid == domid:
                return perm.access
        return self.default

    def __str__(self) -> str:
        return ",".join([f"{self.default.value}{self.owner}", *(str(p) for p in self.listed)])
