"""Every file wgmagic writes, written one way: where it said, with the mode it promised, whatever was there.

A path the user gives is resolved once, when given (`resolve`): `~` expanded, made absolute against the
current directory of that moment (a later `%cd` changes nothing), its directory's symlinks resolved, its last
component kept as named. Every message names that absolute path.

A file is written whole into a fresh temporary file beside the target (created exclusively, never through a
symlink), flushed to disk, then renamed over the target (`replace`, `write_bytes`, `write_text`): readers see
the old file or the new one, never half of it; a symlink at the target is replaced, never followed; a file
there before (of any mode) is replaced, not reused. `private=True` files are mode 0600 exactly, whatever the
umask or the old file's mode; others get what `open()` would give a new file (0666 minus the umask). On any
failure the temporary file is removed and the target is untouched.

`private_directory` makes (or checks) a directory only its owner may enter: 0700, a real directory (not a
symlink), ours; a looser one of ours is tightened. `create_new` opens a file that must not exist yet (a log in
a fresh private directory). `open_private` opens a long-lived file in place (a lock file, which must keep its
inode): never through a symlink, and made 0600.

Errors are OSError subclasses carrying the absolute target as `filename` (FileNotFoundError for a missing
directory, IsADirectoryError, PermissionError, NotADirectoryError...).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIRECTORY_MODE = 0o700
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_BINARY = getattr(os, "O_BINARY", 0)


def resolve(path: str | os.PathLike[str]) -> Path:
    """The absolute path `path` names now: `~` expanded, relative to the current directory, the directory part
    with its symlinks and `..` resolved, the last component as given (so a symlink there is what gets replaced).
    Raises ValueError for an empty path."""
    text = os.fspath(path)
    if not text:
        raise ValueError("an empty file name")
    absolute = Path(os.path.expanduser(text)).absolute()
    if absolute.name in ("", ".", ".."):  # "dir/", "dir/.": the directory itself, not a file in it
        return absolute.resolve()
    return absolute.parent.resolve() / absolute.name


def _named(exc: OSError, target: Path) -> OSError:
    """`exc` again (same class and errno) naming the target, not a temporary file."""
    named = type(exc)(exc.errno, exc.strerror or str(exc), str(target))
    named.__cause__ = exc.__cause__
    return named


def _temporary_beside(target: Path, private: bool) -> tuple[int, Path]:
    """A new file in the target's directory, opened for writing: exclusive (O_EXCL, never a symlink)."""
    mode = PRIVATE_FILE_MODE if private else 0o666  # the kernel applies the umask to the second
    for _ in range(100):
        temporary = target.with_name(f".{target.name[:40]}.{secrets.token_hex(4)}.tmp")  # fits NAME_MAX
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC | _BINARY, mode)
        except FileExistsError:
            continue
        except OSError as exc:
            raise _named(exc, target) from None
        if private and hasattr(os, "fchmod"):
            try:
                os.fchmod(fd, PRIVATE_FILE_MODE)  # exactly 0600, even under a umask such as 0277
            except OSError:
                os.close(fd)
                os.unlink(temporary)
                raise
        return fd, temporary
    raise FileExistsError(errno.EEXIST, "no free temporary name beside it", str(target))


def _refuse_directory(target: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISDIR(os.lstat(target).st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(target))


def check_writable(path: str | os.PathLike[str]) -> Path:
    """Resolve `path` now and prove a file can be written there later (its directory exists and takes a new
    file; the target is not a directory), creating nothing that stays. Returns the absolute path."""
    target = resolve(path)
    _refuse_directory(target)
    fd, temporary = _temporary_beside(target, True)
    os.close(fd)
    os.unlink(temporary)
    return target


@contextlib.contextmanager
def replace(path: str | os.PathLike[str], *, private: bool) -> Iterator[BinaryIO]:
    """A binary stream whose content becomes the file at `path` (resolved now) when the block ends without an
    exception: written to a temporary file beside it, synced, renamed over whatever was there. The target is
    left as it was when the block raises."""
    target = resolve(path)
    _refuse_directory(target)
    fd, temporary = _temporary_beside(target, private)
    try:
        with os.fdopen(fd, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        try:
            os.replace(temporary, target)
        except OSError as exc:
            raise _named(exc, target) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes, *, private: bool) -> Path:
    """Write `data` as the whole file at `path` (see `replace`); returns the absolute path written."""
    target = resolve(path)
    with replace(target, private=private) as stream:
        stream.write(data)
    return target


def write_text(path: str | os.PathLike[str], text: str, *, private: bool, encoding: str = "utf-8") -> Path:
    """Write `text` (encoded, no newline translation) as the whole file at `path`; returns the absolute path."""
    return write_bytes(path, text.encode(encoding), private=private)


def private_directory(path: str | os.PathLike[str]) -> Path:
    """A directory at `path` (resolved now; parents made as `mkdir -p` makes them) that only this user may
    enter: made 0700, or an existing one of ours tightened to 0700. Raises NotADirectoryError when something
    else (a file, a symlink) is there, PermissionError when it belongs to another user. Returns the absolute
    path. Where there are no owners and modes (Windows) the directory is only made."""
    target = resolve(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(target, PRIVATE_DIRECTORY_MODE)
    if os.name != "posix":
        if not target.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(target))
        return target
    try:
        fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW | _CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise NotADirectoryError(errno.ENOTDIR, "is not a directory (a file or a symlink is there)",
                                     str(target)) from None
        raise _named(exc, target) from None
    try:
        info = os.fstat(fd)
        if info.st_uid != os.getuid():
            raise PermissionError(errno.EPERM, f"belongs to another user (uid {info.st_uid})", str(target))
        if stat.S_IMODE(info.st_mode) != PRIVATE_DIRECTORY_MODE:
            os.fchmod(fd, PRIVATE_DIRECTORY_MODE)
    finally:
        os.close(fd)
    return target


def create_new(path: str | os.PathLike[str], *, private: bool) -> BinaryIO:
    """Open a file that must not exist yet for writing (binary): FileExistsError if anything is there (a
    symlink included). 0600 when `private`. The caller closes it."""
    target = resolve(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC | _BINARY
    try:
        fd = os.open(target, flags, PRIVATE_FILE_MODE if private else 0o666)
    except OSError as exc:
        raise _named(exc, target) from None
    if private and hasattr(os, "fchmod"):
        os.fchmod(fd, PRIVATE_FILE_MODE)
    return os.fdopen(fd, "wb")


def open_private(path: str | os.PathLike[str]) -> int:
    """A file descriptor (read-write) on the file at `path`, created if missing, kept if there (a lock file
    must keep its inode): never through a symlink at the last component (OSError ELOOP), and 0600 afterwards
    whatever its mode was. The caller closes it."""
    target = resolve(path)
    try:
        fd = os.open(target, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC | _BINARY, PRIVATE_FILE_MODE)
    except OSError as exc:
        raise _named(exc, target) from None
    if hasattr(os, "fchmod"):
        try:
            if stat.S_IMODE(os.fstat(fd).st_mode) != PRIVATE_FILE_MODE:
                os.fchmod(fd, PRIVATE_FILE_MODE)
        except OSError:
            os.close(fd)
            raise
    return fd


def text_lines(text: str) -> list[str]:
    """A text file's lines as the tools whose files these are read them (wg-quick, libpq's .pgpass, my.cnf): cut
    at \\n, \\r\\n or \\r only, never at the other separators `str.splitlines` knows (U+2028, U+0085, \\f, ...),
    which may sit inside a value; no trailing empty line."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines
