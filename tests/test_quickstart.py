"""quickstart's folder: never a user's project, reused only when it is its own."""

from __future__ import annotations
import pytest

from tests.helpers import cli, error_line


def test_quickstart_never_writes_into_a_users_project(in_tmp):
    (in_tmp / "models").mkdir()
    (in_tmp / "models" / "model.pt").write_text("my real model")
    result = cli("quickstart", "--dir", ".")
    assert error_line(result) == ("Error: .: not empty and not made by `numerflow quickstart`; choose a new --dir "
                                  "(quickstart would overwrite data/, models/ and predictions/ in it)")
    assert (in_tmp / "models" / "model.pt").read_text() == "my real model"
    assert sorted(p.name for p in in_tmp.iterdir()) == ["models"]


@pytest.mark.slow
def test_quickstart_may_reuse_its_own_folder(in_tmp):
    from numerflow.stages.quickstart import MARKER, claim_folder

    claim_folder(in_tmp / "qs")
    (in_tmp / "qs" / "models").mkdir()
    claim_folder(in_tmp / "qs")  # a rerun: allowed
    assert (in_tmp / "qs" / MARKER).is_file()
    (in_tmp / "file").write_text("x")
    assert error_line(cli("quickstart", "--dir", "file")) == "Error: file: exists and is not a folder"
