"""Every file the kiosk writes by renaming it into place stays whole after a
power cut on FAT too: a USB stick holding the mirror (the queue's key and
copy) or an export, the boot partition.

On FAT the rename writes the new directory entry with size 0; the size and
first cluster reach the disk only with the file's own entry, which the
rename leaves dirty in memory.  A kiosk that syncs only the folder after the
rename leaves a 0-byte kiosk.key on the stick if the power goes in the next
half minute (the image test saw it: a new card could not take its key back).
No FAT can be mounted here, so these tests watch the system calls: after
the rename the file itself is fsync'd under its new name, then its folder.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

import kiosk_builtins.tinydb_store.key_protector as key_protector
import kiosk_builtins.tinydb_store.log_storage as log_storage
from kiosk import durable, export_file
from kiosk_builtins.tinydb_store.log_storage import EncryptedLogStorage, create_key, load_key


@pytest.fixture
def calls(monkeypatch):
    """The renames and fsyncs made, in order: ("rename", inode, folder inode) and
    ("fsync", inode, is_folder)."""
    seen = []
    real_replace, real_rename, real_fsync = os.replace, os.rename, os.fsync

    def renamed(real):
        def rename(src, dst, *args, **kwargs):
            real(src, dst, *args, **kwargs)
            seen.append(("rename", os.stat(dst).st_ino, os.stat(os.path.dirname(os.path.abspath(dst))).st_ino))
        return rename

    def fsync(fd):
        real_fsync(fd)
        info = os.fstat(fd)
        seen.append(("fsync", info.st_ino, stat.S_ISDIR(info.st_mode)))
    monkeypatch.setattr(os, "replace", renamed(real_replace))
    monkeypatch.setattr(os, "rename", renamed(real_rename))
    monkeypatch.setattr(os, "fsync", fsync)
    return seen


def assert_settled(seen, path: Path) -> None:
    """PATH was renamed into place, then fsync'd as a file, then its folder was."""
    inode = path.stat().st_ino
    renames = [i for i, call in enumerate(seen) if call[0] == "rename" and call[1] == inode]
    assert renames, f"{path.name} was not renamed into place: {seen}"
    after = seen[renames[-1] + 1:]
    folder = renames and seen[renames[-1]][2]
    file_synced = [i for i, call in enumerate(after) if call == ("fsync", inode, False)]
    assert file_synced, f"{path.name} not fsync'd under its new name after the rename: {seen}"
    assert ("fsync", folder, True) in after[file_synced[0]:], f"{path.name}'s folder not fsync'd after: {seen}"


def test_write_file_is_whole_private_and_settled(tmp_path, calls):
    target = tmp_path / "applied.toml"
    target.write_bytes(b"old")
    durable.write_file(target, b"new settings\n", 0o600)
    assert target.read_bytes() == b"new settings\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["applied.toml"]
    assert_settled(calls, target)


def test_write_file_that_fails_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "applied.toml"
    target.write_bytes(b"old")

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(durable, "write_all", full)
    with pytest.raises(OSError):
        durable.write_file(target, b"new")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["applied.toml"]


def test_a_mirror_copy_on_a_stick_is_settled(tmp_path, calls):
    """install_copy: how the key and the queue's copy reach the stick."""
    stick = tmp_path / "stick"
    stick.mkdir()
    log_storage.install_copy(stick / "kiosk.key", os.urandom(32), None, 0)
    assert_settled(calls, stick / "kiosk.key")


def test_a_compacted_queue_is_settled_on_both_copies(tmp_path, calls):
    key_path = tmp_path / "kiosk.key"
    create_key(key_path)
    key = load_key(key_path)
    stick = tmp_path / "stick"
    stick.mkdir()
    storage = EncryptedLogStorage(tmp_path / "live.kdb", key=key, label="live", create=True,
                                  mirror=stick / "live.kdb")
    try:
        for n in range(3):
            storage.write({"_default": {str(n): {"n": n}}})
        calls.clear()
        storage.compact()
    finally:
        storage.close()
    assert_settled(calls, tmp_path / "live.kdb")
    assert_settled(calls, stick / "live.kdb")


def test_a_new_key_on_a_file_system_without_hard_links_is_settled(tmp_path, calls, monkeypatch):
    def no_links(src, dst, *args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")     # what FAT answers
    monkeypatch.setattr(os, "link", no_links)
    key_protector._write_new(tmp_path / "kiosk.key.device", os.urandom(60))
    assert_settled(calls, tmp_path / "kiosk.key.device")


def test_an_export_to_a_stick_is_settled(tmp_path, calls):
    target = tmp_path / "stall-7.kioskexport"
    export_file.write(target, "correct horse battery staple", {"kiosk_id": "stall-7"}, [], [])
    assert_settled(calls, target)
