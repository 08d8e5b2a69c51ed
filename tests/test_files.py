"""Files written whole or not at all (harness.files, public as harness.api.write_atomically)."""

from __future__ import annotations

import os

import pytest

from harness.api import temporary_beside, write_atomically


def test_the_new_file_replaces_the_old_one_with_the_usual_mode(tmp_path):
    target = tmp_path / "report.md"
    target.write_text("old")
    old = os.umask(0o027)
    try:
        write_atomically(target, lambda h: h.write("new\n"))
    finally:
        os.umask(old)
    assert target.read_text() == "new\n"
    assert target.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "sheet.csv"
    target.write_text("rated by a person")

    def half(handle):
        handle.write("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomically(target, half)
    assert target.read_text() == "rated by a person"
    assert [p.name for p in tmp_path.iterdir()] == ["sheet.csv"]


def test_a_temporary_is_hidden_beside_its_target_and_keeps_newlines_as_asked(tmp_path):
    tmp = temporary_beside(tmp_path / "tasks.json", lambda h: h.write("a\r\nb\n"), newline="")
    assert tmp.parent == tmp_path and tmp.name.startswith(".tasks.json.") and tmp.name.endswith(".tmp")
    assert tmp.read_bytes() == b"a\r\nb\n"
    assert not (tmp_path / "tasks.json").exists()
