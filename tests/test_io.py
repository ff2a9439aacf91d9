"""fastrnn._io.atomic_write and check_writable: replace-or-keep, fsync, permissions, no temp files left."""
import errno
import os
import stat

import pytest

from fastrnn import _io
from fastrnn._io import atomic_write, check_writable
from conftest import simulate_full_disk


def leftovers(folder):
    """Temporary files atomic_write leaves in `folder` (there should be none)."""
    return sorted(name for name in os.listdir(folder) if name.endswith(_io.TEMPORARY_SUFFIX))


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring it afterwards."""
    saved = os.umask(0o022)
    os.umask(saved)

    def set_umask(value):
        os.umask(value)

    yield set_umask
    os.umask(saved)


def test_writes_binary_and_text(tmp_path):
    with atomic_write(tmp_path / "a.bin") as file:
        file.write(b"\x00\x01\r\n")
    with atomic_write(tmp_path / "b.txt", "w") as file:
        file.write("caf\u00e9\n")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01\r\n"
    assert (tmp_path / "b.txt").read_bytes() == "caf\u00e9\n".encode("utf-8")  # UTF-8, no newline translation
    assert leftovers(tmp_path) == []


def test_target_is_untouched_until_the_block_ends(tmp_path):
    target = tmp_path / "f"
    target.write_bytes(b"old")
    with atomic_write(target) as file:
        file.write(b"new data")
        file.flush()
        assert target.read_bytes() == b"old"
        assert len(leftovers(tmp_path)) == 1  # the data goes to a temporary file next to it
    assert target.read_bytes() == b"new data"
    assert leftovers(tmp_path) == []


def test_data_is_fsynced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", stat.S_ISDIR(os.fstat(fd).st_mode), os.fstat(fd).st_size))
        real_fsync(fd)

    def replace(source, destination):
        events.append(("replace", os.path.basename(destination)))
        real_replace(source, destination)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    with atomic_write(tmp_path / "f") as file:
        file.write(b"x" * 1000)
    # The file's data (all 1000 bytes) reaches the disk, then the rename, then the folder entry.
    assert events == [("fsync", False, 1000), ("replace", "f"), ("fsync", True, events[2][2])]


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_new_file_gets_the_permissions_of_a_plain_open(tmp_path, umask, mask):
    umask(mask)
    with open(tmp_path / "plain", "wb"):
        pass
    with atomic_write(tmp_path / "atomic") as file:
        file.write(b"x")
    expected = stat.S_IMODE(os.stat(tmp_path / "plain").st_mode)
    assert expected == 0o666 & ~mask
    assert stat.S_IMODE(os.stat(tmp_path / "atomic").st_mode) == expected


def test_replaced_file_keeps_its_permissions(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "f"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    with atomic_write(target) as file:
        file.write(b"new")
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640
    assert target.read_bytes() == b"new"


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_an_error_in_the_block_keeps_the_old_file_and_removes_the_temporary(tmp_path, error):
    target = tmp_path / "f"
    target.write_bytes(b"old")
    with pytest.raises(type(error)):
        with atomic_write(target) as file:
            file.write(b"half of the new")
            raise error
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_an_error_before_anything_exists_creates_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_write(tmp_path / "f"):
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_a_full_disk_keeps_the_old_file_and_removes_the_temporary(tmp_path, monkeypatch, where):
    target = tmp_path / "f"
    target.write_bytes(b"old")
    simulate_full_disk(monkeypatch, where)
    with pytest.raises(OSError) as raised:
        with atomic_write(target) as file:
            file.write(b"12345")
            file.write(b"x" * 1000)
    assert raised.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_bad_mode_and_folder_targets_are_refused(tmp_path):
    with pytest.raises(ValueError, match="mode must be 'wb' or 'w', got 'a'"):
        with atomic_write(tmp_path / "f", "a"):
            pass
    with pytest.raises(IsADirectoryError):
        with atomic_write(tmp_path):
            pass
    with pytest.raises(FileNotFoundError):
        with atomic_write(tmp_path / "missing" / "f"):
            pass
    assert os.listdir(tmp_path) == []


def test_check_writable_accepts_a_writable_path_and_leaves_nothing(tmp_path):
    check_writable(tmp_path / "new")
    (tmp_path / "old").write_bytes(b"keep")
    check_writable(tmp_path / "old")
    assert sorted(os.listdir(tmp_path)) == ["old"]
    assert (tmp_path / "old").read_bytes() == b"keep"


def test_check_writable_raises_what_a_save_would_meet(tmp_path):
    with pytest.raises(FileNotFoundError):
        check_writable(tmp_path / "missing" / "f")
    with pytest.raises(IsADirectoryError):
        check_writable(tmp_path)
    with pytest.raises(NotADirectoryError):
        (tmp_path / "file").write_bytes(b"")
        check_writable(tmp_path / "file" / "f")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_check_writable_refuses_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    os.chmod(folder, 0o555)
    try:
        with pytest.raises(PermissionError):
            check_writable(folder / "f")
    finally:
        os.chmod(folder, 0o755)
