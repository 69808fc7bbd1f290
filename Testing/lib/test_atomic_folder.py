"""atomic_folder: a folder appears complete under its name, or not at all."""

from __future__ import annotations

import pytest

from BoneMetSegLib.io.atomic import atomic_folder


def test_folder_appears_only_when_complete(tmp_path):
    target = tmp_path / "sub" / "case"
    with atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("a")
        assert not target.exists() and tmp.parent == target.parent and tmp.name.startswith(".~")
    assert (target / "a.txt").read_text() == "a"
    assert sorted(p.name for p in target.parent.iterdir()) == ["case"]


def test_failure_leaves_nothing(tmp_path):
    target = tmp_path / "case"
    with pytest.raises(RuntimeError), atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("a")
        raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []


def test_existing_folder_is_kept_unless_overwrite(tmp_path):
    target = tmp_path / "case"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(FileExistsError), atomic_folder(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    with atomic_folder(target, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case"]  # the old folder is gone
