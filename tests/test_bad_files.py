"""Bad files and answers (issue 27 point 7), each through the CLI as a user runs it: one `Error:`
line, exit 1, nothing published under a final name."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from numerflow.cli import app

runner = CliRunner()


def error_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


# --- prepare on a user's own files (no download manifest) -------------------------------------

def own_dataset(tmp_path, synthetic_dir, change) -> tuple:
    """A copy of the synthetic version folder without its download manifest, its train.parquet
    changed by `change(frame) -> frame`."""
    folder = tmp_path / "own" / "v"
    shutil.copytree(synthetic_dir, folder)
    (folder / ".download_manifest.json").unlink(missing_ok=True)
    train = pd.read_parquet(folder / "train.parquet")
    change(train).to_parquet(folder / "train.parquet")
    return folder, train


def prepare(folder, out):
    return runner.invoke(app, ["prepare", "--dataset", str(folder), "--feature-set", "all", "--out-dir", str(out)])


def _feature_out_of_range(frame):
    frame.iloc[:, [c.startswith("feature") for c in frame.columns].index(True)] = 9
    return frame


def _target_out_of_range(frame):
    frame["target"] = frame["target"] * 3  # 0..3
    return frame


def _duplicate_id(frame):
    return frame.rename(index={frame.index[1]: frame.index[0]})


def _text_target(frame):
    frame["target"] = frame["target"].astype(str)
    return frame


@pytest.mark.parametrize("change, expected", [
    (_feature_out_of_range, "feature values outside 0..4"),
    (_target_out_of_range, "column target: target values outside 0..1 (from 0 to 3)"),
    (_duplicate_id, "1 id(s) appear more than once (first: "),
    (_text_target, "column target: target values of type "),  # the string type pandas wrote
])
def test_prepare_refuses_bad_own_files_and_publishes_nothing(tmp_path, synthetic_dir, change, expected):
    folder, _ = own_dataset(tmp_path, synthetic_dir, change)
    line = error_line(prepare(folder, tmp_path / "prepared"))
    assert line.startswith(f"Error: {folder / 'train.parquet'}: ") and expected in line
    assert not (tmp_path / "prepared").exists() or list((tmp_path / "prepared").iterdir()) == []


def test_prepare_accepts_good_own_files(tmp_path, synthetic_dir):
    folder, _ = own_dataset(tmp_path, synthetic_dir, lambda frame: frame)
    result = prepare(folder, tmp_path / "prepared")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "prepared" / "manifest.json").is_file()
