"""wgmagic/files.py: a file wgmagic writes is the file it named, with the mode it promised, whatever was there
before (issue 21, item 2)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgmagic import files


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture
def umask():
    old = os.umask(0o022)
    try:
        yield lambda value: os.umask(value)
    finally:
        os.umask(old)


def test_a_relative_path_is_resolved_once_when_given(tmp_path, monkeypatch):
    (tmp_path / "first").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "first")
    target = files.check_writable("support.pcapng")
    assert target == tmp_path.resolve() / "first" / "support.pcapng" and target.is_absolute()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert files.write_bytes(target, b"packets", private=True) == target
    assert target.read_bytes() == b"packets"
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_resolve_expands_home_and_dotdot_but_keeps_a_symlink_at_the_end(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert files.resolve("~/x.pcapng") == tmp_path.resolve() / "x.pcapng"
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "real" / "f").symlink_to("/etc/passwd")
    assert files.resolve(tmp_path / "link" / ".." / "link" / "f") == tmp_path.resolve() / "real" / "f"
    with pytest.raises(ValueError):
        files.resolve("")


@pytest.mark.parametrize("before", ["nothing", "file 0644", "file 0666", "symlink", "dangling symlink",
                                    "read-only file"])
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o277, 0o000])
def test_a_private_file_ends_up_0600_and_in_place_whatever_was_there(tmp_path, umask, before, mask):
    target = tmp_path / "secret.conf"
    victim = tmp_path / "victim"
    victim.write_text("not yours")
    victim.chmod(0o644)
    if before.startswith("file") or before == "read-only file":
        target.write_text("old content")
        target.chmod({"file 0644": 0o644, "file 0666": 0o666, "read-only file": 0o444}[before])
    elif before == "symlink":
        target.symlink_to(victim)
    elif before == "dangling symlink":
        target.symlink_to(tmp_path / "nowhere")
    umask(mask)
    assert files.write_text(target, "PrivateKey = ...\n", private=True) == target
    assert not target.is_symlink() and target.is_file()
    assert _mode(target) == 0o600
    assert target.read_text() == "PrivateKey = ...\n"
    assert victim.read_text() == "not yours" and _mode(victim) == 0o644
    assert not (tmp_path / "nowhere").exists()
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_a_public_file_gets_the_mode_open_would_give_and_replaces_a_symlink(tmp_path, umask, mask):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    target = tmp_path / "quickstart.html"
    target.symlink_to(victim)
    umask(mask)
    files.write_bytes(target, b"<html>", private=False)
    assert not target.is_symlink() and target.read_bytes() == b"<html>"
    assert _mode(target) == 0o666 & ~mask
    assert victim.read_text() == "keep"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "capture.pcapng"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), files.replace(target, private=True) as stream:
        stream.write(b"half")
        raise RuntimeError("the writer failed")
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_errors_name_the_absolute_target(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir").mkdir()
    with pytest.raises(IsADirectoryError) as caught:
        files.check_writable("adir")
    assert caught.value.filename == str(tmp_path.resolve() / "adir")
    with pytest.raises(IsADirectoryError):
        files.write_bytes("adir", b"x", private=True)
    with pytest.raises(FileNotFoundError) as missing:
        files.check_writable("no/such/dir/f.pcapng")
    assert missing.value.filename == str(tmp_path.resolve() / "no/such/dir/f.pcapng")
    assert str(tmp_path.resolve()) in str(missing.value)
    assert _leftovers(tmp_path) == []


def test_check_writable_creates_nothing(tmp_path):
    assert files.check_writable(tmp_path / "later.pcapng") == tmp_path / "later.pcapng"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory")
def test_an_unwritable_directory_fails_at_once(tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o500)
    with pytest.raises(PermissionError) as caught:
        files.check_writable(locked / "f")
    assert caught.value.filename == str(locked / "f")


@pytest.mark.parametrize("before", [None, 0o755, 0o777, 0o1777, 0o700])
def test_private_directory_is_0700_whatever_its_mode_was(tmp_path, umask, before):
    directory = tmp_path / "a" / "wgmagic-demo"
    if before is not None:
        directory.mkdir(parents=True)
        directory.chmod(before)
    umask(0o000)
    assert files.private_directory(directory) == directory
    assert _mode(directory) == 0o700 and directory.is_dir()


def test_private_directory_refuses_a_symlink_or_a_file(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o777)
    real.chmod(0o777)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(NotADirectoryError) as caught:
        files.private_directory(tmp_path / "link")
    assert caught.value.filename == str(tmp_path / "link")
    assert _mode(real) == 0o777  # the symlink's target is left alone
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        files.private_directory(tmp_path / "file")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a directory of another user")
def test_private_directory_refuses_another_users_directory(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o777)
    os.chown(theirs, 65534, 65534)
    with pytest.raises(PermissionError, match="another user"):
        files.private_directory(theirs)


def test_create_new_refuses_anything_already_there(tmp_path, umask):
    umask(0o000)
    with files.create_new(tmp_path / "postgres.log", private=True) as log:
        log.write(b"started\n")
    assert _mode(tmp_path / "postgres.log") == 0o600
    (tmp_path / "planted").symlink_to(tmp_path / "target")
    for name in ("postgres.log", "planted"):
        with pytest.raises(FileExistsError):
            files.create_new(tmp_path / name, private=True)
    assert not (tmp_path / "target").exists()


def test_open_private_keeps_the_inode_tightens_the_mode_and_never_follows_a_symlink(tmp_path):
    lock = tmp_path / "x.lock"
    lock.write_text("123")
    lock.chmod(0o644)
    inode = lock.stat().st_ino
    fd = files.open_private(lock)
    try:
        assert os.fstat(fd).st_ino == inode and _mode(lock) == 0o600
    finally:
        os.close(fd)
    victim = tmp_path / "victim"
    victim.write_text("x")
    victim.chmod(0o644)
    (tmp_path / "y.lock").symlink_to(victim)
    with pytest.raises(OSError):
        files.open_private(tmp_path / "y.lock")
    assert _mode(victim) == 0o644


@settings(max_examples=50, deadline=None)
@given(name=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"), min_size=1,
                    max_size=60).filter(lambda n: n not in (".", "..")),
       data=st.binary(max_size=2000), private=st.booleans())
def test_any_file_name_is_written_where_named(tmp_path_factory, name, data, private):
    directory = tmp_path_factory.mktemp("names")
    try:
        target = files.write_bytes(directory / name, data, private=private)
    except OSError as exc:  # a name too long for the file system once encoded
        assert exc.filename == str(directory / name)
        return
    assert target == directory / name and target.read_bytes() == data
    assert sorted(p.name for p in directory.iterdir()) == [name]
    if private:
        assert _mode(target) == 0o600


def test_a_name_as_long_as_the_file_system_takes_is_written(tmp_path):
    name = "é" * 127 + "x"  # 255 bytes in UTF-8: NAME_MAX
    assert files.write_bytes(tmp_path / name, b"x", private=True).read_bytes() == b"x"
