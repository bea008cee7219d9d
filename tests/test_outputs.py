"""What commands write: never over their inputs, never under a file or into a folder named as a
file, one line naming the final file when a disk is full or read-only (train checks --out before
training), and each stage's outputs published as one set, so that a failed or killed run (a real
SIGKILL at a chosen rename) never leaves a mix that readers accept.

Full and read-only disks are real: a small tmpfs mounted for the test (the tests run as root;
where mounting is not allowed they skip and say why)."""

from __future__ import annotations
import shutil
from pathlib import Path
import pytest
from numerflow import schema
from numerflow.errors import DataError
import os
import subprocess
from numerflow import files
from numerflow.cli import os_error_line
import hashlib
import signal
import sys
from tests.helpers import cli, error_line, run_killed_at_rename, temporaries, tmpfs


def test_outputs_never_replace_inputs(in_tmp, synthetic_dir, synthetic_models):
    shutil.copyfile(synthetic_dir / schema.LIVE_FILE, in_tmp / "live.parquet")
    shutil.copyfile(synthetic_models["all"], in_tmp / "m.pt")
    before = {p.name: p.read_bytes() for p in in_tmp.iterdir()}
    result = cli("predict", "--model", "m.pt", "--data", "live.parquet", "--out", "live.parquet")
    assert error_line(result) == "Error: live.parquet: is one of the inputs; choose another output path"
    assert error_line(cli("export", "--model", "m.pt", "--out", "m.pt")) == (
        "Error: m.pt: is one of the inputs; choose another output path")
    assert {p.name: p.read_bytes() for p in in_tmp.iterdir()} == before


# ---- outputs that cannot be written ------------------------------------------------------------

def test_output_under_a_file_is_one_error_line(in_tmp, synthetic_dir, synthetic_models):
    (in_tmp / "taken").write_text("a file, not a folder")
    model = synthetic_models["all"]
    live = synthetic_dir / schema.LIVE_FILE
    cases = [
        (["predict", "--model", model, "--data", live, "--out", "taken/p.csv"], "taken: exists and is not a folder"),
        (["export", "--model", model, "--out", "taken/sub/m.pkl"], "taken/sub: Not a directory"),
        (["validate", "--model", model, "--data", synthetic_models["all"].parent / "prepared_all" / "validation.parquet",
          "--report", "taken"], "taken: exists and is not a folder"),
        (["prepare", "--data-dir", synthetic_dir.parent, "--feature-set", "small", "--out-dir", "taken/prep"],
         "taken/prep: Not a directory"),
    ]
    for args, message in cases:
        assert error_line(cli(*args)) == f"Error: {message}", args
    assert (in_tmp / "taken").read_text() == "a file, not a folder"
    assert sorted(p.name for p in in_tmp.iterdir()) == ["taken"]


def test_output_that_is_a_folder_keeps_the_folder(in_tmp, synthetic_models):
    (in_tmp / "out.pkl").mkdir()
    result = cli("export", "--model", synthetic_models["all"], "--out", "out.pkl")
    assert error_line(result) == "Error: out.pkl: Is a directory"
    assert sorted(p.name for p in in_tmp.iterdir()) == ["out.pkl"]  # no temporary file left behind


def test_unwritable_output_names_the_final_file_not_the_temporary_one(in_tmp, synthetic_models):
    from numerflow.cli import os_error_line

    assert os_error_line(PermissionError(13, "Permission denied", "out/.p.csv.k2j3h4.tmp")) == "out/p.csv: Permission denied"
    assert os_error_line(OSError(30, "Read-only file system", "/mnt/ro/models")) == "/mnt/ro/models: Read-only file system"
    if Path("/proc/self").is_dir():  # Linux: nobody, root included, can create files in /proc
        result = cli("export", "--model", synthetic_models["all"], "--out", "/proc/m.pkl")
        assert error_line(result) == "Error: /proc/m.pkl: No such file or directory"


def train_args(prepared: Path, out: Path, *extra):
    return ["train", "--data", prepared, "--out", out, "--layers", "16", "--epochs", "1", "--batch-size", "256",
            "--device", "cpu", *extra]


# ---- full disks: one line naming the file ------------------------------------------------------

@pytest.mark.slow
def test_train_on_a_full_disk_is_one_error_line_naming_the_file(tmp_path, prepared):
    with tmpfs(tmp_path / "disk", "size=16k") as disk:
        result = cli(*train_args(prepared, disk / "model.pt", "--layers", "512"))
        assert result.exit_code == 1, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        last = result.output.strip().splitlines()[-1]  # epoch lines come first
        assert last in (f"Error: {disk / 'model.pt'}: No space left on device",
                        f"Error: {disk / 'model.pt.resume'}: No space left on device"), result.output
        assert not (disk / "model.pt").exists()
        assert [p.name for p in disk.iterdir() if p.name.endswith(".tmp")] == []


def test_a_full_disk_names_the_file_an_atomic_write_was_writing(tmp_path):
    with tmpfs(tmp_path / "disk", "size=8k") as disk:
        with pytest.raises(OSError) as caught:
            files.write_json(disk / "big.json", {"x": "y" * 100_000})
        assert os_error_line(caught.value) == f"{disk / 'big.json'}: No space left on device"


def test_prepare_on_a_full_disk_is_one_error_line_naming_the_file(tmp_path):
    from tests.test_prepare import write_version

    version = write_version(tmp_path / "data" / "v5.2", train_eras=40, rows_per_era=400)
    with tmpfs(tmp_path / "disk", "size=8k") as disk:
        # the train file fails on the writer thread; the error may surface after validation began
        result = cli("prepare", "--dataset", version, "--feature-set", "all", "--out-dir", disk)
        assert error_line(result) == f"Error: {disk / 'train.parquet'}: No space left on device"
        assert list(disk.iterdir()) == []


def test_torch_zip_writer_failures_come_back_as_the_os_error(tmp_path):
    import torch

    from numerflow.checkpoint import save_atomic

    with tmpfs(tmp_path / "disk", "size=8k") as disk:
        with pytest.raises(OSError) as caught:
            save_atomic(disk / "x.pt", {"w": torch.zeros(100_000)})
        assert os_error_line(caught.value) == f"{disk / 'x.pt'}: No space left on device"
        assert list(disk.iterdir()) == []


# ---- train checks that --out can be written before training -----------------------------------

def assert_refused_before_training(result, expected: str):
    assert error_line(result) == expected  # one line: no epoch was trained first


def test_train_out_under_a_regular_file_fails_before_training(tmp_path, prepared):
    (tmp_path / "blocker").write_text("")
    out = tmp_path / "blocker" / "models" / "model.pt"
    assert_refused_before_training(cli(*train_args(prepared, out)),
                                   f"Error: --out: cannot make the folder {out.parent}: a file is in the way")


def test_train_out_on_a_read_only_disk_fails_before_training(tmp_path, prepared):
    with tmpfs(tmp_path / "ro", "size=1m,ro") as disk:
        assert_refused_before_training(cli(*train_args(prepared, disk / "model.pt")),
                                       f"Error: --out: cannot write in {disk} (Read-only file system)")


@pytest.mark.skipif(os.geteuid() == 0,
                    reason="root writes into a mode-0555 folder, so only a non-root run can test permissions")
def test_train_out_in_a_folder_without_write_permission_fails_before_training(tmp_path, prepared):
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o555)
    assert_refused_before_training(cli(*train_args(prepared, folder / "model.pt")),
                                   f"Error: --out: cannot write in {folder} (Permission denied)")


SMALL = ["--eras", "20", "--rows-per-era", "40", "--features", "10"]


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("download", "--synthetic", "--data-dir", "data", "--seed", "0", *SMALL).exit_code == 0
    return tmp_path / "data"


# ---- prepare publishes train.parquet, validation.parquet and manifest.json as one set

def test_prepare_failing_on_its_second_output_keeps_the_old_set(data_dir):
    assert cli("prepare", "--data-dir", data_dir, "--feature-set", "all").exit_code == 0
    prepared = data_dir / "prepared"
    old_train = (prepared / "train.parquet").read_bytes()
    (prepared / "validation.parquet").unlink()
    (prepared / "validation.parquet").mkdir()  # the rename of the second output must fail
    result = cli("prepare", "--data-dir", data_dir, "--feature-set", "all", "--downsample", "2")
    assert (prepared / "train.parquet").read_bytes() == old_train  # nothing renamed
    assert error_line(result) == f"Error: {prepared / 'validation.parquet'}: Is a directory"
    assert temporaries(prepared) == []


@pytest.mark.slow
def test_prepare_killed_between_renames_is_refused_by_readers_and_redone(data_dir):
    assert cli("prepare", "--data-dir", data_dir, "--feature-set", "all").exit_code == 0
    prepared = data_dir / "prepared"
    # killed after renaming train.parquet, before validation.parquet and the manifest
    run_killed_at_rename(2, "prepare", "--data-dir", "data", "--feature-set", "all", "--downsample", "2",
                         cwd=data_dir.parent)
    with pytest.raises(DataError, match="does not match .*manifest.json .*mixed or incomplete set"):
        schema.read_prepared_manifest(prepared)
    result = cli("train", "--data", prepared, "--out", "m.pt", "--epochs", "1")
    assert error_line(result).startswith(f"Error: {prepared / 'train.parquet'}: does not match "
                                         f"{prepared / 'manifest.json'} (")
    assert error_line(result).endswith("run `numerflow prepare` again")
    assert temporaries(prepared)  # the killed run's validation.parquet, never renamed
    assert cli("prepare", "--data-dir", data_dir, "--feature-set", "all", "--downsample", "2").exit_code == 0
    assert schema.read_prepared_manifest(prepared)["downsample"] == 2
    assert temporaries(prepared) == []  # the dead writer's temporary file was removed


# ---- download --synthetic publishes its files as one set

@pytest.mark.slow
def test_synthetic_rerun_killed_after_train_is_refused_by_prepare(data_dir):
    run_killed_at_rename(2, "download", "--synthetic", "--data-dir", "data", "--seed", "5", *SMALL,
                         cwd=data_dir.parent)  # train.parquet of seed 5 beside seed 0's other files
    result = cli("prepare", "--data-dir", data_dir, "--feature-set", "all")
    folder = data_dir / "synthetic"
    assert error_line(result).startswith(f"Error: {folder / 'train.parquet'}: does not match "
                                         f"{folder / '.download_manifest.json'} (")
    assert not (data_dir / "prepared").exists()
    assert cli("download", "--synthetic", "--data-dir", data_dir, "--seed", "5", *SMALL).exit_code == 0
    assert cli("prepare", "--data-dir", data_dir, "--feature-set", "all").exit_code == 0
    assert temporaries(folder) == []


def test_synthetic_rerun_failing_after_train_keeps_the_old_set(data_dir):
    folder = data_dir / "synthetic"
    old = {name: (folder / name).read_bytes() for name in ("train.parquet", "live.parquet")}
    (folder / "validation.parquet").unlink()
    (folder / "validation.parquet").mkdir()
    result = cli("download", "--synthetic", "--data-dir", data_dir, "--seed", "5", *SMALL)
    assert {name: (folder / name).read_bytes() for name in old} == old
    assert error_line(result) == f"Error: {folder / 'validation.parquet'}: Is a directory"
    assert temporaries(folder) == []


# ---- validate publishes report.json, per_era.csv and per_era.png as one set

def validate_args(data_dir, report):
    folder = data_dir / "synthetic"
    return ["validate", "--predictions", folder / "validation_example_preds.parquet",
            "--data", folder / "validation.parquet", "--report", report]


def test_validate_whose_plot_cannot_be_written_publishes_no_report(data_dir, tmp_path):
    report = tmp_path / "report"
    (report / "per_era.png").mkdir(parents=True)
    result = cli(*validate_args(data_dir, report))
    assert sorted(p.name for p in report.iterdir()) == ["per_era.png"]  # no report.json, no per_era.csv
    assert error_line(result) == f"Error: {report / 'per_era.png'}: Is a directory"


@pytest.mark.slow
def test_validate_on_a_full_disk_keeps_the_previous_report(data_dir, tmp_path):
    import resource

    report = tmp_path / "report"
    assert cli(*validate_args(data_dir, report)).exit_code == 0
    sizes = {p.name: p.stat().st_size for p in report.iterdir()}
    assert sorted(sizes) == ["per_era.csv", "per_era.png", "report.json"]
    before = {name: (report / name).read_bytes() for name in sizes}
    small = max(sizes["per_era.csv"], sizes["report.json"])
    assert sizes["per_era.png"] > small + 1024
    limit = small + 1024  # every file but the plot fits: writing the plot fails as on a full disk

    def full_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run([sys.executable, "-m", "numerflow", *map(str, validate_args(data_dir, report)),
                           "--target", "target_ender_20"],  # another report than the first
                          cwd=tmp_path, capture_output=True, text=True, preexec_fn=full_disk)
    assert {name: (report / name).read_bytes() for name in sizes} == before
    assert done.returncode == 1 and done.stderr.strip() == f"Error: {report / 'per_era.png'}: File too large"
    assert temporaries(report) == []


def test_prepare_writes_the_manifest_keys_schema_defines(data_dir):
    assert cli("prepare", "--data-dir", data_dir, "--feature-set", "all").exit_code == 0
    manifest = schema.read_prepared_manifest(data_dir / schema.PREPARED_DIR)
    assert sorted(manifest) == sorted(schema.PREPARED_MANIFEST_KEYS)
    assert sorted(manifest[schema.MANIFEST_FILES]) == sorted(schema.PREPARED_FILES)
    for name, record in manifest[schema.MANIFEST_FILES].items():
        path = data_dir / schema.PREPARED_DIR / name
        assert record["size"] == path.stat().st_size
        assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
