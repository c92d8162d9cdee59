"""The record of open connections beside the key lock (runtime/lifecycle.py): written whole and 0600, read
once by the next holder of the key (and removed), an empty one removed, a symlink never followed."""

from __future__ import annotations

import ipaddress
import os
import stat

from wgmagic.netstack.leftovers import FourTuple
from wgmagic.runtime.keylock import KeyLock
from wgmagic.runtime.lifecycle import LeftoverRecord

A = FourTuple(ipaddress.ip_address("198.18.0.2"), 50000, ipaddress.ip_address("198.18.0.1"), 5432)
B = FourTuple(ipaddress.ip_address("fd77:6d61:6769:6300::2"), 50001, ipaddress.ip_address("fd77:6d61:6769:6300::1"),
              5432)


def test_record_beside_the_lock_written_0600_taken_once(tmp_path) -> None:
    lock = KeyLock(held=[(str(tmp_path / ("ab" * 12 + ".lock")), -1)])
    record = LeftoverRecord.beside(lock)
    assert record is not None and record.path == str(tmp_path / ("ab" * 12 + ".connections"))
    old = os.umask(0)
    try:
        record.write([A, B])
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(record.path).st_mode) == 0o600
    assert LeftoverRecord(record.path).take() == [A, B]
    assert not os.path.exists(record.path)
    assert LeftoverRecord(record.path).take() == []


def test_an_empty_record_is_removed_and_nothing_held_means_no_record(tmp_path) -> None:
    record = LeftoverRecord(str(tmp_path / "x.connections"))
    record.write([A])
    assert os.path.exists(record.path)
    record.write([])
    assert not os.path.exists(record.path)
    assert LeftoverRecord.beside(KeyLock()) is None


def test_a_symlink_at_the_record_is_not_followed(tmp_path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"wgmagic-connections 1\n198.18.0.2 50000 198.18.0.1 5432\n")
    link = tmp_path / "x.connections"
    link.symlink_to(target)
    assert LeftoverRecord(str(link)).take() == []
