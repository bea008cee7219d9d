"""Atomic writes: nothing under the final name unless the block succeeded; normal permissions."""

from __future__ import annotations

import os
import stat

import pytest

from numerflow.files import atomic_path, write_json


def test_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path):
    final = tmp_path / "out.csv"
    final.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert final.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.csv"]


def test_successful_write_is_renamed_with_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_json(tmp_path / "sub" / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert path.read_text().strip() == '{\n  "x": 1\n}'
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(path.parent) == ["a.json"]
