"""An adapter sent to a worker as files lives in a temporary folder only while it is used."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from harness.pipeline.jobs import AdapterRef


def test_a_readable_path_is_used_as_it_is_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "adapter_model.safetensors").write_bytes(b"w")
    with AdapterRef("a" * 64, str(tmp_path)).local_dir() as folder:
        assert folder == tmp_path
    assert (tmp_path / "adapter_model.safetensors").read_bytes() == b"w"


def test_sent_files_are_written_once_and_removed_after_the_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ref = AdapterRef("b" * 64, "/nowhere/on/this/worker", (("adapter_config.json", b"{}"), ("adapter_model.safetensors", b"xyz")))
    with ref.local_dir() as folder:
        assert folder.parent == tmp_path and folder.name.startswith("harness-adapter-bbbbbbbbbbbb-")
        assert (folder / "adapter_model.safetensors").read_bytes() == b"xyz"
        assert (folder / "adapter_config.json").read_bytes() == b"{}"
    assert not folder.exists() and list(tmp_path.iterdir()) == []


def test_the_folder_is_removed_when_the_block_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ref = AdapterRef("c" * 64, None, (("adapter_model.safetensors", b"1"),))
    with pytest.raises(RuntimeError, match="engine failed"):
        with ref.local_dir():
            raise RuntimeError("engine failed")
    assert list(tmp_path.iterdir()) == []


def test_an_adapter_neither_here_nor_sent_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not at /gone and its files were not sent"):
        with AdapterRef("d" * 64, "/gone").local_dir():
            pass
