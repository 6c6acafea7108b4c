"""``mlcanary.runtime.atomic_files.write_atomic``: the old content or the new, never a part, and no
temp file left behind whatever happens."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlcanary.runtime import atomic_files
from mlcanary.runtime.atomic_files import write_atomic


def test_a_new_file_is_written_with_its_directory(tmp_path: Path) -> None:
    target = tmp_path / "run" / "nested" / "state.json"
    write_atomic(target, '{"a": 1}\n')
    assert target.read_text(encoding="utf-8") == '{"a": 1}\n'
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]


def test_an_existing_file_is_replaced_by_a_rename_not_rewritten_in_place(tmp_path: Path) -> None:
    target = tmp_path / "routes.yaml"
    target.write_text("old\n", encoding="utf-8")
    before = os.stat(target).st_ino
    write_atomic(target, "new\n")
    assert target.read_text(encoding="utf-8") == "new\n"
    assert os.stat(target).st_ino != before  # a file watcher (Envoy's RDS) sees a rename
    assert [p.name for p in tmp_path.iterdir()] == ["routes.yaml"]


def test_a_failed_rename_leaves_the_old_content_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "weights.json"
    target.write_text("old\n", encoding="utf-8")

    def refuse(_src: object, _dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(atomic_files.os, "rename", refuse)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, "new\n")
    assert target.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.json"]
