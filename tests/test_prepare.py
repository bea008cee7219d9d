"""prepare: options, output layout, manifest, and every kind of bad input, on small Parquet files in
the Numerai layout written here (and on the shared synthetic set once end to end)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from numerflow.cli import app
from numerflow.config import PrepareConfig
from numerflow.errors import DataError
from numerflow.stages.prepare import prepare, read_manifest
import shutil
from numerflow import schema
from numerflow.config import DownloadConfig
from numerflow.stages.download import download
from tests.helpers import HAND_MADE, cli, error_line, text_target_dataset, runner

FEATURES = [f"feature_{w}" for w in ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot")]
TARGETS = ["target", "target_ender_20", "target_jasper_60", "target_cyrus_20"]
OUTPUTS = ["train.parquet", "validation.parquet", "manifest.json"]


def numerai_frame(eras: list[str], rows_per_era: int, data_type: str, seed: int,
                  float_features: bool = False, id_prefix: str = "n") -> pd.DataFrame:
    """Rows in the Numerai layout: index id, era, data_type, int8 features 0..4, float targets."""
    rng = np.random.default_rng(seed)
    n = len(eras) * rows_per_era
    frame = pd.DataFrame({"era": np.repeat(eras, rows_per_era), "data_type": data_type},
                         index=pd.Index([f"{id_prefix}{i:015x}" for i in range(n)], name="id"))
    for name in FEATURES:
        values = rng.integers(0, 5, n).astype(np.int8)
        frame[name] = values / 4 if float_features else values
    for name in TARGETS:
        frame[name] = rng.integers(0, 5, n) / 4
    return frame


def write_version(folder: Path, train_eras: int = 20, valid_eras: int = 12, rows_per_era: int = 5,
                  label=lambda i: f"{i:04d}", float_features: bool = False,
                  extra_validation_rows: bool = True) -> Path:
    """A version folder (train/validation.parquet, features.json) like Numerai's, small."""
    folder.mkdir(parents=True, exist_ok=True)
    train = numerai_frame([label(i) for i in range(1, train_eras + 1)], rows_per_era, "train", 0, float_features)
    valid = numerai_frame([label(i) for i in range(train_eras + 1, train_eras + valid_eras + 1)],
                          rows_per_era, "validation", 1, float_features, id_prefix="v")
    if extra_validation_rows:  # Numerai's validation file also holds recent rows not yet resolved
        live_like = numerai_frame([label(train_eras + valid_eras + 1)], rows_per_era, "test", 2,
                                  float_features, id_prefix="t")
        live_like[TARGETS] = np.nan
        valid = pd.concat([valid, live_like])
    train.to_parquet(folder / "train.parquet", row_group_size=37)
    valid.to_parquet(folder / "validation.parquet", row_group_size=37)
    sets = {"small": FEATURES[:2], "medium": FEATURES[::-1][:4], "all": FEATURES}
    (folder / "features.json").write_text(json.dumps({"feature_sets": sets, "targets": TARGETS}))
    return folder


@pytest.fixture
def version_dir(tmp_path) -> Path:
    return write_version(tmp_path / "data" / "v5.2")


def run(version_dir: Path, **options):
    options.setdefault("feature_set", "all")
    data_dir = version_dir.parent
    return prepare(PrepareConfig(data_dir=data_dir, dataset=version_dir, **options))


def eras_of(path: Path) -> list[str]:
    return sorted(set(pd.read_parquet(path, columns=["era"])["era"]))


# --- options ------------------------------------------------------------------------------------

def test_default_layout_dtypes_and_index(version_dir):
    result = run(version_dir)
    assert result.out_dir == version_dir.parent / "prepared"
    train = pd.read_parquet(result.train)
    assert train.index.name == "id"
    assert list(train.columns) == ["era"] + FEATURES + TARGETS  # every auxiliary target by default
    assert result.targets == TARGETS
    assert all(train[f].dtype == np.int8 for f in FEATURES)
    assert all(train[t].dtype == np.float32 for t in TARGETS)
    assert pd.api.types.is_string_dtype(train["era"])
    source = pd.read_parquet(version_dir / "train.parquet")
    np.testing.assert_array_equal(train[FEATURES].to_numpy(), source.loc[train.index, FEATURES].to_numpy())
    np.testing.assert_array_equal(train["target"].to_numpy(), source.loc[train.index, "target"].astype(np.float32))


def test_downsample_keeps_every_kth_era_from_the_first(version_dir):
    assert eras_of(run(version_dir, downsample=4).train) == ["0001", "0005", "0009", "0013", "0017"]
    assert eras_of(run(version_dir, downsample=1).train) == [f"{i:04d}" for i in range(1, 21)]
    assert eras_of(run(version_dir, downsample=7).train) == ["0001", "0008", "0015"]


def test_embargo_drops_eras_after_the_last_train_era(version_dir):
    # last train era is 0020 whatever the downsampling; validation eras are 0021..0032
    assert eras_of(run(version_dir, embargo=4).validation)[0] == "0025"
    assert eras_of(run(version_dir, embargo=0).validation)[0] == "0021"
    assert eras_of(run(version_dir, embargo=4, downsample=7).validation)[0] == "0025"
    assert eras_of(run(version_dir, embargo=11).validation) == ["0032"]


def test_validation_keeps_only_validation_rows(version_dir):
    result = run(version_dir, embargo=0)
    valid = pd.read_parquet(result.validation)
    assert (valid.index.str.startswith("v")).all() and len(valid) == 12 * 5
    assert "0033" not in set(valid["era"])  # the "test" rows' era


def test_aux_targets_list_and_all(version_dir):
    listed = run(version_dir, aux_targets=["target_cyrus_20", "target_ender_20"])
    assert listed.targets == ["target", "target_cyrus_20", "target_ender_20"]
    assert list(pd.read_parquet(listed.validation).columns[-3:]) == listed.targets
    every = run(version_dir, aux_targets=["all"])
    assert every.targets == TARGETS
    for none in (["none"], []):  # the main target alone: `--aux-targets none` (or an empty list from Python)
        main_only = run(version_dir, aux_targets=none)
        assert main_only.targets == ["target"]
        assert list(pd.read_parquet(main_only.train).columns) == ["era"] + FEATURES + ["target"]
    other_main = run(version_dir, target="target_jasper_60", aux_targets=["all"])
    assert other_main.targets == ["target_jasper_60", "target", "target_ender_20", "target_cyrus_20"]
    frame = pd.read_parquet(other_main.train)
    assert all(frame[t].dtype == np.float32 for t in other_main.targets)


def test_target_is_named_the_alias_only_when_every_value_matches(version_dir):
    path = version_dir / "train.parquet"
    frame = pd.read_parquet(path)
    frame["target_ender_20"] = frame["target"]
    frame.loc[frame.index[3], ["target", "target_ender_20"]] = np.nan  # missing in both: still the same
    frame.to_parquet(path, row_group_size=37)
    assert "alias of target_ender_20" in run(version_dir).target_choice
    frame.loc[frame.index[-1], "target_ender_20"] = -1.0  # one value differs, in the last row group
    frame.to_parquet(path, row_group_size=37)
    assert run(version_dir).target_choice == ""


def test_feature_set_selects_columns_in_set_order(version_dir):
    result = run(version_dir, feature_set="medium")
    expected = FEATURES[::-1][:4]
    assert result.features == expected
    assert list(pd.read_parquet(result.train).columns) == ["era"] + expected + TARGETS


def test_nan_main_target_rows_dropped_aux_nans_kept(tmp_path):
    folder = write_version(tmp_path / "v5.2")
    for name, ids_prefix in (("train.parquet", "n"), ("validation.parquet", "v")):
        frame = pd.read_parquet(folder / name)
        frame.iloc[:7, frame.columns.get_loc("target")] = np.nan
        frame.iloc[7:15, frame.columns.get_loc("target_ender_20")] = np.nan
        frame.to_parquet(folder / name)
    result = run(folder, aux_targets=["all"], downsample=1, embargo=0)
    train = pd.read_parquet(result.train)
    assert len(train) == 20 * 5 - 7 and result.rows_train == len(train)
    assert not train["target"].isna().any()
    assert train["target_ender_20"].isna().sum() == 8
    valid = pd.read_parquet(result.validation)
    assert len(valid) == 12 * 5 - 7 and not valid["target"].isna().any()


def test_float_feature_release_converts_exactly(tmp_path):
    ints = write_version(tmp_path / "ints")
    floats = write_version(tmp_path / "floats", float_features=True)
    assert pq.read_schema(floats / "train.parquet").field(FEATURES[0]).type == pa.float64()
    a = pd.read_parquet(run(ints, out_dir=tmp_path / "a").train)
    b = pd.read_parquet(run(floats, out_dir=tmp_path / "b").train)
    assert all(b[f].dtype == np.int8 for f in FEATURES)
    pd.testing.assert_frame_equal(a, b)


def test_era_labels_with_prefix_sort_numerically(tmp_path):
    folder = write_version(tmp_path / "old", train_eras=12, valid_eras=8, label=lambda i: f"era{i}")
    result = run(folder, downsample=5, embargo=2)
    assert result.eras_train == ["era1", "era6", "era11"]
    assert result.eras_validation == ["era15", "era16", "era17", "era18", "era19", "era20"]
    assert eras_of(result.train) == sorted(["era1", "era6", "era11"])


def test_manifest_content(version_dir, tmp_path):
    result = run(version_dir, aux_targets=["target_cyrus_20"], out_dir=tmp_path / "out")
    manifest = read_manifest(tmp_path / "out")
    assert manifest == json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["version"] == "v5.2"
    assert manifest["version_dir"] == str(version_dir.resolve())
    assert manifest["sources"] == {name: (version_dir / name).stat().st_size
                                   for name in ("train.parquet", "validation.parquet", "features.json")}
    assert manifest["feature_set"] == "all" and manifest["features"] == FEATURES
    assert manifest["target"] == "target" and manifest["targets"] == ["target", "target_cyrus_20"]
    assert manifest["eras_train"] == ["0001", "0005", "0009", "0013", "0017"]
    assert manifest["eras_validation"] == [f"{i:04d}" for i in range(25, 33)]
    assert (manifest["embargo"], manifest["downsample"]) == (4, 4)
    assert (manifest["rows_train"], manifest["rows_validation"]) == (25, 40)
    assert result.rows_train == 25 and result.rows_validation == 40


def test_cli_prints_summary_and_finds_newest_version(tmp_path):
    write_version(tmp_path / "data" / "v5.0", train_eras=8, valid_eras=8)
    write_version(tmp_path / "data" / "v5.2")
    out = runner.invoke(app, ["prepare", "--data-dir", str(tmp_path / "data"), "--feature-set", "small",
                              "--downsample", "2", "--embargo", "3"])  # the default keeps every auxiliary target
    assert out.exit_code == 0, out.output
    assert "Prepared v5.2: feature set 'small' (2 int8 features), target 'target' + 3 auxiliary" in out.output
    assert "50 rows, 10 eras (0001..0019)" in out.output
    manifest = read_manifest(tmp_path / "data" / "prepared")
    assert manifest["version"] == "v5.2" and manifest["eras_validation"][0] == "0024"


# --- bad input: one Error line, exit 1, nothing under the final names ---------------------------

def assert_fails(args: list[str], message: str, out_dir: Path):
    result = runner.invoke(app, ["prepare", *args, "--out-dir", str(out_dir)])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == f"Error: {message}"
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


def test_unknown_feature_set(version_dir, tmp_path):
    assert_fails(["--dataset", str(version_dir), "--feature-set", "huge"],
                 f"{version_dir / 'features.json'}: unknown feature set 'huge' (available: all, medium, small)",
                 tmp_path / "out")


def test_unknown_target_and_aux_target(version_dir, tmp_path):
    available = ", ".join(TARGETS)
    assert_fails(["--dataset", str(version_dir), "--target", "target_nope_20"],
                 f"{version_dir / 'train.parquet'}: target 'target_nope_20' not found (available: {available})",
                 tmp_path / "out")
    assert_fails(["--dataset", str(version_dir), "--aux-targets", "target_ender_20,target_x"],
                 f"{version_dir / 'train.parquet'}: target(s) target_x not found (available: {available})",
                 tmp_path / "out")


def test_feature_set_column_missing_from_file(version_dir, tmp_path):
    meta = json.loads((version_dir / "features.json").read_text())
    meta["feature_sets"]["all"] = FEATURES + ["feature_zulu"]
    (version_dir / "features.json").write_text(json.dumps(meta))
    assert_fails(["--dataset", str(version_dir), "--feature-set", "all"],
                 f"{version_dir / 'train.parquet'}: missing 1 column(s): feature_zulu", tmp_path / "out")


def test_missing_train_file_and_missing_data_folder(version_dir, tmp_path):
    (version_dir / "train.parquet").unlink()
    assert_fails(["--dataset", str(version_dir)], f"{version_dir / 'train.parquet'}: file not found",
                 tmp_path / "out")
    empty = tmp_path / "empty"
    assert_fails(["--data-dir", str(empty)],
                 f"{empty}: no dataset folder found (run `numerflow download` or "
                 f"`numerflow download --synthetic` first)", tmp_path / "out")


def test_dataset_not_a_folder_and_missing_features_json(version_dir, tmp_path):
    assert_fails(["--dataset", str(tmp_path / "nowhere")], f"{tmp_path / 'nowhere'}: no such dataset folder",
                 tmp_path / "out")
    (version_dir / "features.json").unlink()
    assert_fails(["--dataset", str(version_dir)], f"{version_dir / 'features.json'}: file not found",
                 tmp_path / "out")


def test_wider_integer_features_and_no_data_type_column(tmp_path):
    folder = write_version(tmp_path / "v4", extra_validation_rows=False)
    for name in ("train.parquet", "validation.parquet"):
        frame = pd.read_parquet(folder / name).drop(columns="data_type")
        frame[FEATURES] = frame[FEATURES].astype(np.int64)
        frame.to_parquet(folder / name)
    result = run(folder, embargo=0)
    valid = pd.read_parquet(result.validation)
    assert len(valid) == 12 * 5 and all(valid[f].dtype == np.int8 for f in FEATURES)


def test_truncated_parquet(version_dir, tmp_path):
    path = version_dir / "validation.parquet"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert_fails(["--dataset", str(version_dir)], f"{path}: not a readable Parquet file (ArrowInvalid)",
                 tmp_path / "out")


CONTINUOUS = ("float feature values that are not 0, .25, .5, .75 or 1 (continuous features of a pre-2019 release? "
              "pass `numerflow prepare --bin-features 5` to bucket them within each era)")


@pytest.mark.parametrize("value, problem", [
    (5, "feature values outside 0..4"),
    (-1, "feature values outside 0..4"),
    (0.3, CONTINUOUS),
    (1.25, CONTINUOUS),
])
def test_bad_feature_values(tmp_path, value, problem):
    folder = write_version(tmp_path / "v5.2", float_features=isinstance(value, float))
    frame = pd.read_parquet(folder / "validation.parquet")
    frame.iloc[-8, frame.columns.get_loc("feature_delta")] = value
    frame.to_parquet(folder / "validation.parquet")
    assert_fails(["--dataset", str(folder), "--embargo", "0"],
                 f"{folder / 'validation.parquet'}: column feature_delta: {problem}", tmp_path / "out")


def test_no_rows_left_after_filtering(tmp_path):
    folder = write_version(tmp_path / "v5.2")
    assert_fails(["--dataset", str(folder), "--embargo", "12"],
                 f"{folder / 'validation.parquet'}: no validation eras left after era 0020 + embargo of 12 eras",
                 tmp_path / "out")
    frame = pd.read_parquet(folder / "train.parquet")
    frame["target"] = np.nan
    frame.to_parquet(folder / "train.parquet")
    assert_fails(["--dataset", str(folder)],
                 f"{folder / 'train.parquet'}: no rows left after filtering (data_type 'train', "
                 f"5 era(s) selected, rows with a missing 'target' dropped)", tmp_path / "out")


def test_failure_leaves_previous_outputs_untouched(version_dir, tmp_path):
    out = tmp_path / "out"
    run(version_dir, out_dir=out)
    before = {name: (out / name).read_bytes() for name in OUTPUTS}
    result = runner.invoke(app, ["prepare", "--dataset", str(version_dir), "--feature-set", "nope",
                                 "--out-dir", str(out)])
    assert result.exit_code == 1
    assert {name: (out / name).read_bytes() for name in OUTPUTS} == before
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)  # no temporary files left


def test_library_raises_data_error(version_dir):
    with pytest.raises(DataError, match="unknown feature set"):
        run(version_dir, feature_set="nope")


# --- end to end on the built-in synthetic set ---------------------------------------------------

def test_synthetic_dataset_end_to_end(synthetic_dir, tmp_path):
    out = tmp_path / "prepared"
    result = runner.invoke(app, ["prepare", "--data-dir", str(synthetic_dir.parent), "--feature-set", "all",
                                 "--aux-targets", "all", "--out-dir", str(out)])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out)
    meta = json.loads((synthetic_dir / "features.json").read_text())
    assert manifest["version"] == "synthetic" and manifest["features"] == meta["feature_sets"]["all"]
    source_train = pd.read_parquet(synthetic_dir / "train.parquet", columns=["era"])
    source_eras = sorted(set(source_train["era"]))
    assert manifest["eras_train"] == source_eras[::4]
    last = int(source_eras[-1])
    assert int(manifest["eras_validation"][0]) > last + 4
    train = pd.read_parquet(out / "train.parquet")
    valid = pd.read_parquet(out / "validation.parquet")
    assert len(train) == manifest["rows_train"] and len(valid) == manifest["rows_validation"]
    assert list(train.columns) == ["era"] + manifest["features"] + manifest["targets"] + ["benchmark"]
    assert not valid["target"].isna().any()
    # validation rows are exactly the source's resolved validation rows of the kept eras
    source_valid = pd.read_parquet(synthetic_dir / "validation.parquet", columns=["era", "data_type", "target"])
    expected = source_valid[(source_valid["data_type"] == "validation") & source_valid["target"].notna()
                            & source_valid["era"].isin(manifest["eras_validation"])]
    assert sorted(valid.index) == sorted(expected.index)


def test_prepare_text_target_is_a_data_error_and_keeps_the_old_output(in_tmp, synthetic_dir):
    assert cli("prepare", "--data-dir", synthetic_dir.parent, "--feature-set", "small", "--out-dir", "prep").exit_code == 0
    before = {p.name: p.read_bytes() for p in (in_tmp / "prep").iterdir()}
    dataset = text_target_dataset(synthetic_dir, in_tmp / "bad")
    result = cli("prepare", "--dataset", dataset.name, "--feature-set", "small", "--out-dir", "prep")
    assert error_line(result) == "Error: bad/train.parquet: column target: target values of type large_string, expected numbers"
    assert {p.name: p.read_bytes() for p in (in_tmp / "prep").iterdir()} == before  # no temp files left either


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", "no 'feature_sets' object"),
    ('{"feature_sets": [1, 2]}', "no 'feature_sets' object"),
    ('{"feature_sets": {"small": "feature_a"}}', "feature set 'small' is not a list of column names"),
])
def test_malformed_features_json(in_tmp, synthetic_dir, text, message):
    shutil.copytree(synthetic_dir, in_tmp / "ds", ignore=HAND_MADE)  # files changed below: no download record
    (in_tmp / "ds" / schema.FEATURES_FILE).write_text(text)
    result = cli("prepare", "--dataset", "ds", "--feature-set", "small", "--out-dir", "prep")
    assert error_line(result) == f"Error: ds/features.json: {message}"
    assert not (in_tmp / "prep").exists()


# --- prepare ------------------------------------------------------------------------------------

def test_prepare_quantum_and_all_on_v53(v53_dir, tmp_path):
    meta = json.loads((v53_dir / "features.json").read_text())
    for feature_set in ("quantum", "all"):
        result = prepare(PrepareConfig(dataset=v53_dir, feature_set=feature_set, aux_targets=["all"],
                                       out_dir=tmp_path / feature_set, downsample=1, embargo=0))
        assert result.features == meta["feature_sets"][feature_set]
        train = pd.read_parquet(result.train)
        assert list(train.columns[1:1 + len(result.features)]) == result.features
        assert all(train[f].dtype == np.int8 for f in result.features)
        # `target` is target_ender_20's alias on v5.3: kept as the main target, and said so
        assert result.targets == ["target", "target_ender_20", "target_cyrusd_20"]
        assert "target 'target' ('target' is the alias of target_ender_20: the same values)" in str(result)


def test_prepare_takes_target_ender_20_when_target_is_absent(v53_dir, tmp_path):
    release = tmp_path / "no_alias"
    release.mkdir()
    shutil.copyfile(v53_dir / "features.json", release / "features.json")
    for name in ("train.parquet", "validation.parquet"):
        pd.read_parquet(v53_dir / name).drop(columns=["target"]).to_parquet(release / name)
    result = cli("prepare", "--dataset", release, "--feature-set", "quantum", "--aux-targets", "none",
                 "--out-dir", tmp_path / "prep")
    assert result.exit_code == 0, result.output
    assert "target 'target_ender_20' ('target' is absent: target_ender_20 is the main target)" in result.output
    manifest = json.loads((tmp_path / "prep" / "manifest.json").read_text())
    assert manifest["target"] == "target_ender_20" and manifest["targets"] == ["target_ender_20"]


@pytest.mark.parametrize("version, feature_set", [("v5.2", "quantum"), ("v5.3", "quantum_2027")])
def test_prepare_refuses_a_set_the_release_does_not_have(numerai53, tmp_path, version, feature_set):
    folder = download(DownloadConfig(data_dir=tmp_path / "data", version=version)).directory
    sets = sorted(json.loads((folder / "features.json").read_text())["feature_sets"])
    result = cli("prepare", "--dataset", folder, "--feature-set", feature_set, "--out-dir", tmp_path / "prep")
    assert error_line(result) == (f"Error: {folder / 'features.json'}: unknown feature set '{feature_set}' "
                                  f"(available: {', '.join(sets)})")
    assert not (tmp_path / "prep").exists()


def test_manifest_that_is_not_an_object(in_tmp, synthetic_dir, synthetic_models):
    shutil.copytree(synthetic_models["all"].parent / "prepared_all", in_tmp / "prep")
    (in_tmp / "prep" / "manifest.json").write_text("[1, 2]")
    message = "Error: prep/manifest.json: not a prepare manifest (expected a JSON object)"
    assert error_line(cli("train", "--data", "prep", "--epochs", "1", "--device", "cpu", "--out", "m.pt")) == message
    assert error_line(cli("validate", "--model", synthetic_models["all"], "--data", "prep/validation.parquet",
                          "--no-report")) == message
    assert not (in_tmp / "m.pt").exists()


def test_manifest_lists_that_are_not_lists(in_tmp, synthetic_models):
    shutil.copytree(synthetic_models["all"].parent / "prepared_all", in_tmp / "prep")
    manifest = json.loads((in_tmp / "prep" / "manifest.json").read_text())
    (in_tmp / "prep" / "manifest.json").write_text(json.dumps({**manifest, "targets": "target"}))
    result = cli("train", "--data", "prep", "--epochs", "1", "--device", "cpu", "--out", "m.pt")
    assert error_line(result) == "Error: prep/manifest.json: 'targets' is not a list of column names"
