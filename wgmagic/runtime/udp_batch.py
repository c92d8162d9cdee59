"""Many UDP datagrams per system call: Linux's recvmmsg(2), which Python's socket module does not offer.

The tunnel's receive path made one `recvfrom` per datagram: at bulk rates (a large `%%wgsql` result, about
90,000 datagrams a second) the system calls were the largest single cost of the tunnel's thread. `BatchReceiver`
fills up to `count` preallocated buffers in one call (through ctypes, which releases the GIL during the call)
and hands back each datagram's bytes and its sender's raw socket address.

Structures (Linux UAPI, <sys/socket.h>, <bits/uio.h>): `struct iovec { void *iov_base; size_t iov_len; }`,
`struct msghdr { void *msg_name; socklen_t msg_namelen; struct iovec *msg_iov; size_t msg_iovlen; void
*msg_control; size_t msg_controllen; int msg_flags; }`, `struct mmsghdr { struct msghdr msg_hdr; unsigned int
msg_len; }`. `sockaddr_address` turns a raw `sockaddr_in` / `sockaddr_in6` into the tuple `recvfrom` returns.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import socket
import struct
import sys

SOCKADDR_SIZE = 128  # sizeof(struct sockaddr_storage)
MSG_DONTWAIT = 0x40
MAX_DATAGRAM = 65535  # a UDP payload never exceeds this: no datagram is ever truncated


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(_IoVec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t), ("msg_flags", ctypes.c_int)]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


_NAMELEN = _MMsgHdr.msg_hdr.offset + _MsgHdr.msg_namelen.offset
_MSGLEN = _MMsgHdr.msg_len.offset
_U32 = struct.Struct("=I")
_PORT = struct.Struct("!H")


def _recvmmsg() -> object | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).recvmmsg
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    function.restype = ctypes.c_int
    return function


_RECVMMSG = _recvmmsg()


def available() -> bool:
    """Whether this system has recvmmsg (Linux)."""
    return _RECVMMSG is not None


class BatchReceiver:
    """Up to `count` datagrams per `receive(fd)` call from a non-blocking UDP socket (Linux).

    Memory: `count` buffers of 64 KiB (mapped, resident only where written) and their socket addresses,
    allocated once."""

    def __init__(self, count: int = 64) -> None:
        if _RECVMMSG is None:
            raise OSError(errno.ENOSYS, "recvmmsg is not available on this system")
        self.count = count
        # anonymous memory: a page becomes resident only when a datagram is written into it (an idle tunnel
        # costs nothing; a bulk transfer touches the first page or so of each slot)
        self._map = mmap.mmap(-1, count * MAX_DATAGRAM)
        self._buffer = (ctypes.c_char * (count * MAX_DATAGRAM)).from_buffer(self._map)
        self._names = ctypes.create_string_buffer(count * SOCKADDR_SIZE)
        self._iovecs = (_IoVec * count)()
        self._messages = (_MMsgHdr * count)()
        base, names = ctypes.addressof(self._buffer), ctypes.addressof(self._names)
        for i in range(count):
            self._iovecs[i].iov_base = base + i * MAX_DATAGRAM
            self._iovecs[i].iov_len = MAX_DATAGRAM
            header = self._messages[i].msg_hdr
            header.msg_name = names + i * SOCKADDR_SIZE
            header.msg_namelen = SOCKADDR_SIZE
            header.msg_iov = ctypes.pointer(self._iovecs[i])
            header.msg_iovlen = 1
        self._raw = memoryview(self._messages).cast("B")
        self._data = memoryview(self._map)
        self._name_view = memoryview(self._names).cast("B")
        self._used = 0  # messages whose msg_namelen the kernel overwrote in the last call

    def receive(self, fd: int) -> list[tuple[bytes, bytes]]:
        """The datagrams waiting on `fd` (at most `count`): (payload, raw socket address) each; [] when none.
        Raises OSError as `recvfrom` would (ConnectionRefusedError for a queued ICMP port unreachable)."""
        raw, size = self._raw, ctypes.sizeof(_MMsgHdr)
        for i in range(self._used):  # the kernel wrote each used message's address length: restore the room
            _U32.pack_into(raw, i * size + _NAMELEN, SOCKADDR_SIZE)
        got = _RECVMMSG(fd, self._messages, self.count, MSG_DONTWAIT, None)  # type: ignore[operator]
        if got < 0:
            self._used = 0
            code = ctypes.get_errno()
            if code in (errno.EAGAIN, errno.EWOULDBLOCK):
                return []
            raise OSError(code, errno.errorcode.get(code, "recvmmsg failed")) if code != errno.ECONNREFUSED \
                else ConnectionRefusedError(code, "Connection refused")
        self._used = got
        data, names, out = self._data, self._name_view, []
        for i in range(got):
            offset = i * size
            length = _U32.unpack_from(raw, offset + _MSGLEN)[0]
            namelen = _U32.unpack_from(raw, offset + _NAMELEN)[0]
            start = i * MAX_DATAGRAM
            name = i * SOCKADDR_SIZE
            out.append((bytes(data[start:start + length]), bytes(names[name:name + min(namelen, SOCKADDR_SIZE)])))
        return out


def sockaddr_address(name: bytes) -> tuple[object, ...]:
    """A raw sockaddr_in / sockaddr_in6 as the tuple `socket.recvfrom` gives: (host, port) or (host, port,
    flowinfo, scope_id). ValueError for another family or a short address."""
    if len(name) < 2:
        raise ValueError("a socket address too short to name its family")
    family = int.from_bytes(name[:2], sys.byteorder)
    if family == socket.AF_INET and len(name) >= 8:
        return socket.inet_ntop(socket.AF_INET, name[4:8]), _PORT.unpack_from(name, 2)[0]
    if family == socket.AF_INET6 and len(name) >= 28:
        flow, scope = struct.unpack_from("!I", name, 4)[0], struct.unpack_from("=I", name, 24)[0]
        return socket.inet_ntop(socket.AF_INET6, name[8:24]), _PORT.unpack_from(name, 2)[0], flow, scope
    raise ValueError(f"a socket address of family {family}")
