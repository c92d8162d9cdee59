"""The key lock across processes: one tunnel per (our public key, peer) for this user on this machine.

Owns: the per-user runtime directory (`runtime_dir()`: platformdirs' `user_runtime_dir`, which is
$XDG_RUNTIME_DIR/wgmagic on Linux, else `wgmagic-UID` in the temporary directory; 0700, ours), and in it one lock
file per (key, peer), held with flock(2) while a tunnel is up and removed when nothing holds it. Never: a key
on disk (a lock file is named by a hash of both public keys and holds the holder's pid), a directory another
user could write, a lock that outlives its process (the kernel drops an flock with its last descriptor).

Removing a lock file races with a process that opened it just before: that process may then lock a file no
longer in the directory while a third creates a new one under the same name. The standard answer (as in
systemd's and lockfile libraries'): after locking, check that the path still names the inode locked, else
close and try again; and remove the file only while holding its lock.

A tunnel host process (runtime/host.py) also holds `<name>.hostlock` for its life, taken before the key's lock,
so that "a host serves this key (or is starting)" can be told from "another process's own tunnel holds it";
its socket `<name>.host` is removed with a leftover host lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import stat
import sys
import tempfile
import warnings
from collections.abc import Container
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wgmagic import files, platform
from wgmagic.errors import TunnelConflictError

if TYPE_CHECKING:
    from wgmagic.config import WireGuardConfig

logger = logging.getLogger(__name__)
_ATTEMPTS = 8  # lock-then-check rounds lost to other processes removing the file before we give up
_SWEEP_MAX = 256  # leftover lock files looked at per claim
_LOCK_FILE = re.compile(r"[0-9a-f]{24}\.(?:host)?lock")
# A WireGuard peer drops an initiation that comes within 20 ms of the last one it took (the flood check:
# wireguard-go's HandshakeInitationRate, Linux's INITIATIONS_PER_SECOND = 50), and the initiator then waits
# REKEY_TIMEOUT (5 s) to try again: a tunnel closed and opened again at once on one key would wait 5 s.
FLOOD_GUARD = 0.05  # seconds after this process's last handshake on a key before a new tunnel initiates
_LAST_HANDSHAKE: dict[str, float] = {}  # lock name -> time.monotonic() of the last handshake of a closed tunnel


class KeyInUseError(TunnelConflictError):
    """Another process of this user holds the key lock of (our key, a peer): `owner` is its pid (a str, "?" when
    unknown), `peer` the peer's base64 public key. A host process (runtime/host.py) may be serving that tunnel."""

    def __init__(self, message: str, *, owner: str, peer: str) -> None:
        super().__init__(message)
        self.owner, self.peer = owner, peer


def runtime_dir() -> str:
    """Where this user's tunnel state lives: platformdirs.user_runtime_dir("wgmagic") ($XDG_RUNTIME_DIR/wgmagic
    on Linux; the platform's place elsewhere), or, on a Linux or BSD without $XDG_RUNTIME_DIR, `wgmagic-UID` in
    the temporary directory. Not created here (see `private_dir`)."""
    if sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")) and not os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(tempfile.gettempdir(), f"wgmagic-{os.getuid()}")
    import platformdirs

    with warnings.catch_warnings():  # its fallbacks warn; ours is to check the directory below
        warnings.simplefilter("ignore")
        return str(platformdirs.user_runtime_dir("wgmagic"))


def private_dir() -> str | None:
    """`runtime_dir()`, made 0700 if missing; None unless it is a real directory of this user closed to others.

    In a shared /tmp the directory may be someone else's (planted to hold our locks or to point a lock file at a
    file of ours): it is used only when lstat shows a directory, ours, with no group or other permission."""
    try:
        directory = runtime_dir()
        os.makedirs(directory, mode=0o700, exist_ok=True)
        info = os.lstat(directory)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None
    return directory


def lock_name(ours: bytes, peer: bytes) -> str:
    """The lock file's name for (our public key, the peer's): 24 hex digits of BLAKE2s, never the keys."""
    return hashlib.blake2s(ours + peer, digest_size=12).hexdigest() + ".lock"


@dataclass
class KeyLock:
    """The flocks one tunnel holds, one per peer of its config (none where there is no flock).

    `KeyLock.claim(config)` takes them or raises TunnelConflictError naming the process that holds one;
    `release()` removes each lock file (while still holding it) and then lets go; idempotent."""

    held: list[tuple[str, int]] = field(default_factory=list)  # (path, descriptor)
    names: list[str] = field(default_factory=list)  # lock_name of each (our key, peer), held or not

    @classmethod
    def claim(cls, config: WireGuardConfig) -> KeyLock:
        """Lock (our public key, peer) for every peer of `config`, or raise TunnelConflictError (nothing held).

        Where flock is missing (or WGMAGIC_PORTABLE=flock), or the runtime directory is not private, nothing is
        locked and only this process's own check applies."""
        from wgmagic.wireguard.crypto import public_key

        ours = public_key(config.interface.private_key)
        lock = cls(names=[lock_name(ours, peer.public_key) for peer in config.peers])
        if not platform.enabled("flock"):
            logger.debug("no flock on this system: the one-key check covers this process only")
            return lock
        try:
            for peer in config.peers:
                held = _lock_one(lock_name(ours, peer.public_key), peer.public_key_b64)
                if held is not None:
                    lock.held.append(held)
        except BaseException:
            lock.release()
            raise
        if lock.held:
            sweep(os.path.dirname(lock.held[0][0]), keep={path for path, _fd in lock.held})
        return lock

    def handshaken(self, when: float | None) -> None:
        """Remember `when` (time.monotonic() seconds; None: no handshake) as the last handshake on these keys,
        for `initiation_wait` of the next tunnel on them in this process."""
        if when is not None:
            for name in self.names:
                _LAST_HANDSHAKE[name] = max(when, _LAST_HANDSHAKE.get(name, when))

    def initiation_wait(self, now: float) -> float:
        """Seconds to wait at `now` (time.monotonic()) before a first initiation on these keys, so that the peer
        does not drop it as a flood (FLOOD_GUARD after the last handshake a closed tunnel of ours had); 0.0 mostly."""
        last = max((_LAST_HANDSHAKE.get(name, -FLOOD_GUARD) for name in self.names), default=-FLOOD_GUARD)
        return min(FLOOD_GUARD, max(0.0, last + FLOOD_GUARD - now))

    def release(self) -> None:
        """Remove the lock files and drop the locks; the directory goes too when it is left empty."""
        if not self.held:
            return
        directory = os.path.dirname(self.held[0][0])
        for path, fd in self.held:
            try:
                os.unlink(path)  # still locked: whoever opened it meanwhile finds the inode gone and retries
            except OSError:
                pass
            os.close(fd)
        self.held = []
        try:
            os.rmdir(directory)  # only when empty: another tunnel's lock keeps it
        except OSError:
            pass


def sweep(directory: str, keep: Container[str] = ()) -> int:
    """Remove lock files nobody holds (left by a process that was killed, which cannot remove its own): each
    is locked, checked to be still the file at its path, and unlinked while locked, as `release` does. At most
    _SWEEP_MAX files per call; returns how many went."""
    import fcntl

    removed = 0
    try:
        names = [n for n in os.listdir(directory) if _LOCK_FILE.fullmatch(n)][:_SWEEP_MAX]
    except OSError:
        return 0
    for name in names:
        path = os.path.join(directory, name)
        if path in keep:
            continue
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _same_file(fd, path):
                if name.endswith(".hostlock"):  # a killed host's socket goes with its lock (a live one holds it)
                    with contextlib.suppress(OSError):
                        os.unlink(path[: -len("lock")])
                os.unlink(path)
                removed += 1
        except OSError:  # held: a live tunnel's
            pass
        finally:
            os.close(fd)
    return removed


class _Held(Exception):
    """The file is locked by another process (its pid as written there, or "?")."""

    def __init__(self, owner: str) -> None:
        super().__init__(owner)
        self.owner = owner


def _lock_one(name: str, peer_b64: str) -> tuple[str, int] | None:
    try:
        return _flock_file(name)
    except _Held as held:
        raise KeyInUseError(
            f"process {held.owner} already has a tunnel up with this private key to peer {peer_b64[:8]}... "
            "(another notebook, or `wgmagic up`); a WireGuard peer answers only the one that spoke last, so "
            "both would lose traffic. Close that one (tunnel.close() or %wg disconnect in that notebook, "
            "Ctrl-C for `wgmagic up`), or give this client its own key (a [Peer] entry of its own on the "
            "server)", owner=held.owner, peer=peer_b64) from None


def _flock_file(name: str) -> tuple[str, int] | None:
    """Lock `name` in the private directory, write our pid in it: (path, fd); None where nothing can be locked
    (no private directory, or the file kept changing); _Held when another process holds it."""
    import fcntl

    for _attempt in range(_ATTEMPTS):
        directory = private_dir()
        if directory is None:
            return None
        path = os.path.join(directory, name)
        try:
            fd = files.open_private(path)  # 0600 whatever was there, never through a symlink
        except FileNotFoundError:  # the directory was removed as its last lock went: make it again
            continue
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise _Held(owner) from None
        except BaseException:
            os.close(fd)
            raise
        if not _same_file(fd, path):  # removed (and maybe made again) between our open and our lock
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return path, fd
    logger.debug("lock file %s kept changing under us: the one-key check covers this process only", name)
    return None


def host_lock(config: WireGuardConfig) -> KeyLock | None:
    """The lock a tunnel host process (runtime/host.py) holds for its whole life, taken before the key's own:
    a KeyLock holding `<lock name of the first peer>.hostlock`, or None when another process holds it (a host
    is starting or running). Where nothing can be locked, an empty KeyLock."""
    from wgmagic.wireguard.crypto import public_key

    if not platform.enabled("flock") or not config.peers:
        return KeyLock()
    name = lock_name(public_key(config.interface.private_key), config.peers[0].public_key)
    try:
        held = _flock_file(name[: -len(".lock")] + ".hostlock")
    except _Held:
        return None
    return KeyLock([held] if held is not None else [])


def host_running(config: WireGuardConfig) -> bool:
    """Whether a tunnel host process holds `config`'s host lock now (starting, or serving the key)."""
    lock = host_lock(config)
    if lock is None:
        return True
    lock.release()
    return False


def _same_file(fd: int, path: str) -> bool:
    try:
        on_disk = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    held = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)
