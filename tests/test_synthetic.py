"""The synthetic data set: exact Numerai v5 layout, bucket shares, NaN placement, determinism,
and a planted signal that a simple model finds."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from numerflow import schema, synthetic
from numerflow.cli import app
from numerflow.config import SyntheticConfig
from numerflow.errors import ConfigError
from tests.helpers import runner

ERAS, ROWS, FEATURES = 60, 300, 24  # rows divisible by 5 and 20: bucket shares are exact


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return SyntheticConfig(data_dir=tmp_path_factory.mktemp("syn") / "data", eras=ERAS, rows_per_era=ROWS,
                           features=FEATURES, seed=3)


@pytest.fixture(scope="module")
def folder(config):
    return synthetic.write_synthetic(config)


@pytest.fixture(scope="module")
def frames(folder):
    return {kind: pd.read_parquet(folder / f"{kind}.parquet") for kind in ("train", "validation", "live")}


def feature_columns(frame):
    return [c for c in frame.columns if schema.is_feature(c)]


def target_columns(frame):
    return [c for c in frame.columns if schema.is_target(c)]


def test_folder_holds_every_numerai_file(folder):
    assert folder.name == "synthetic"
    assert sorted(p.name for p in folder.iterdir()) == sorted([
        "train.parquet", "validation.parquet", "live.parquet", "features.json", "meta_model.parquet",
        "validation_example_preds.parquet", "live_example_preds.parquet", "live_round.json",
        "train_benchmark_models.parquet", "validation_benchmark_models.parquet", "live_benchmark_models.parquet",
        ".download_manifest.json"])  # the set's manifest, written last
    assert json.loads((folder / "live_round.json").read_text()) == {"round": 1}
    assert schema.read_live_round(folder) == 1
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_columns_dtypes_and_index(frames):
    for kind, frame in frames.items():
        assert frame.index.name == "id"
        assert frame.index.is_unique
        assert all(re.fullmatch(r"n[0-9a-f]{15}", i) for i in frame.index)
        features, targets = feature_columns(frame), target_columns(frame)
        assert len(features) == FEATURES
        assert all(re.fullmatch(r"feature_[a-z]+_[a-z]+_[a-z]+", f) for f in features)
        assert len(set(features)) == FEATURES
        assert (frame[features].dtypes == np.int8).all()
        assert frame[features].min().min() == 0 and frame[features].max().max() == 4
        assert targets[0] == "target"
        aux = [t for t in targets if t != "target"]
        assert len(aux) >= 3 and all(re.fullmatch(r"target_[a-z0-9]+_(20|60)", t) for t in aux)
        assert all(frame[t].dtype.kind == "f" for t in targets)
        assert set(frame["data_type"]) == {kind}
    all_ids = pd.Index(np.concatenate([f.index.to_numpy() for f in frames.values()]))
    assert all_ids.is_unique


def test_era_labels_are_contiguous_zero_padded(frames):
    labels = [schema.sorted_eras(frames[k]["era"]) for k in ("train", "validation", "live")]
    combined = labels[0] + labels[1] + labels[2]
    assert combined == [f"{i:04d}" for i in range(1, ERAS + 2)]
    assert len(labels[0]) == 42 and len(labels[1]) == 18 and labels[2] == ["0061"]
    for frame in frames.values():
        assert (frame.groupby("era").size() == ROWS).all()


def test_target_bucket_shares_per_era(frames):
    shares = np.array([0.05, 0.20, 0.50, 0.20, 0.05])
    for kind in ("train", "validation"):
        frame = frames[kind]
        for target in target_columns(frame):
            for _, values in frame.groupby("era")[target]:
                if values.isna().all():
                    continue
                counts = values.value_counts(normalize=True).reindex([0, .25, .5, .75, 1], fill_value=0)
                np.testing.assert_allclose(counts.to_numpy(), shares, atol=1 / ROWS)


def test_feature_buckets_are_equal_frequency_or_missing(frames, config):
    plan = synthetic.make_plan(config)
    frame = pd.concat([frames["train"], frames["validation"]])
    features = feature_columns(frame)
    missing_seen = 0
    for era, block in frame.groupby("era"):
        values = block[features].to_numpy()
        all_two = (values == 2).all(axis=0)
        group = plan.missing_group[int(era)]
        assert all_two.tolist() == (plan.group_of == group).tolist()  # missing: one whole group
        missing_seen += bool(all_two.any())
        for j in np.flatnonzero(~all_two):
            assert np.bincount(values[:, j], minlength=5).tolist() == [ROWS // 5] * 5
    assert missing_seen >= 1


def test_nan_only_in_auxiliary_targets_of_last_validation_eras(frames):
    assert not frames["train"][target_columns(frames["train"])].isna().any().any()
    validation = frames["validation"]
    assert not validation["target"].isna().any()
    last_eras = schema.sorted_eras(validation["era"])[-4:]
    nan_eras = set(validation.loc[validation[target_columns(validation)].isna().any(axis=1), "era"])
    assert nan_eras and nan_eras <= set(last_eras)
    for target in target_columns(validation):
        per_era = validation.groupby("era")[target].apply(lambda s: s.isna().mean())
        assert set(per_era.unique()) <= {0.0, 1.0}  # a whole era resolves at once
    assert validation.loc[validation["era"] == last_eras[-1], "target_cyrusd_60"].isna().all()
    live = frames["live"]
    assert live[target_columns(live)].isna().all().all()


def test_target_ender_20_is_the_main_target(frames):
    train = frames["train"]
    np.testing.assert_array_equal(train["target"], train["target_ender_20"])


def test_features_json(folder, frames):
    meta = schema.read_feature_sets(folder / "features.json")
    sets = meta["feature_sets"]
    assert {"small", "medium", "all", "intelligence", "charisma", "serenity"} <= set(sets)
    all_features = feature_columns(frames["train"])
    assert sets["all"] == all_features
    assert set(sets["small"]) <= set(sets["medium"]) <= set(sets["all"])
    assert 0 < len(sets["small"]) < len(sets["medium"]) < len(sets["all"])
    assert meta["targets"] == target_columns(frames["train"])


def test_example_predictions_and_meta_model(folder, frames):
    validation, live = frames["validation"], frames["live"]
    examples = pd.read_parquet(folder / "validation_example_preds.parquet")
    assert examples.index.name == "id" and list(examples.columns) == ["prediction"]
    assert examples.index.equals(validation.index)
    assert examples["prediction"].between(0, 1, inclusive="neither").all()
    live_examples = pd.read_parquet(folder / "live_example_preds.parquet")
    assert live_examples.index.equals(live.index) and list(live_examples.columns) == ["prediction"]
    meta = pd.read_parquet(folder / "meta_model.parquet")
    assert meta.index.name == "id" and list(meta.columns) == ["era", "numerai_meta_model"]
    assert set(meta.index) <= set(validation.index)
    assert (meta["era"] == validation.loc[meta.index, "era"]).all()
    assert meta["numerai_meta_model"].between(0, 1, inclusive="neither").all()
    scores = [spearmanr(block["prediction"], block["target"])[0]
              for _, block in examples.join(validation[["era", "target"]]).groupby("era")]
    assert np.mean(scores) > 0.02  # noisy copies of the signal


def test_benchmark_models_are_in_numerais_layout_and_validate_reports_bmc(folder, frames, tmp_path):
    import numerflow

    for kind in ("train", "validation", "live"):
        bench = pd.read_parquet(folder / f"{kind}_benchmark_models.parquet")
        assert bench.index.name == "id" and list(bench.columns) == ["era", "v52_lgbm_ender20"]
        rows = frames[kind][frames[kind]["era"] >= bench["era"].min()]  # train: the later eras only
        assert bench.index.equals(rows.index)
        assert (bench["era"] == rows["era"]).all()
        assert bench["v52_lgbm_ender20"].between(0, 1, inclusive="neither").all()
    validation = frames["validation"]
    bench = pd.read_parquet(folder / "validation_benchmark_models.parquet").join(validation[["target"]])
    scores = [spearmanr(block["v52_lgbm_ender20"], block["target"])[0] for _, block in bench.groupby("era")]
    assert np.mean(scores) > 0.02  # a model of the features that finds part of the signal
    examples = folder / "validation_example_preds.parquet"
    report = numerflow.validate(predictions=examples, data=folder / "validation.parquet", write_report=False,
                                exposure=False)
    assert report.data["benchmark"] == "v52_lgbm_ender20" and report.data["bmc"]["eras_scored"] > 0
    assert not any("BMC left out" in note for note in report.notes)


def _ridge_ranks(fit_rows: pd.DataFrame, rows: pd.DataFrame, features: list[str]) -> np.ndarray:
    """The benchmark written independently: ridge of the centred target on the centred features
    (penalty RIDGE_PENALTY x the Gram matrix's mean diagonal), ranked within each era of `rows`."""
    x = fit_rows[features].to_numpy(np.float64) - 2.0
    gram = x.T @ x
    penalty = synthetic.RIDGE_PENALTY * np.trace(gram) / len(features)
    weights = np.linalg.solve(gram + penalty * np.eye(len(features)), x.T @ (fit_rows["target"].to_numpy() - 0.5))
    scores = pd.Series((rows[features].to_numpy(np.float64) - 2.0) @ weights, index=rows.index)
    return scores.groupby(rows["era"]).transform(lambda s: (s.rank() - 0.5) / len(s)).to_numpy()


def test_benchmark_is_a_ridge_fitted_walk_forward_on_training_eras(folder, frames):
    """Validation: fitted on every training era. Training: the first block has none; each later
    block is predicted by a fit on the eras before it less the purge (no target of its own)."""
    train, validation = frames["train"], frames["validation"]
    features = feature_columns(train)
    era_number = train["era"].astype(int)
    n_train = era_number.max()
    block = int(np.ceil(n_train / synthetic.BENCHMARK_BLOCKS))
    written = pd.read_parquet(folder / "validation_benchmark_models.parquet")["v52_lgbm_ender20"]
    np.testing.assert_allclose(written.to_numpy(), _ridge_ranks(train, validation, features), atol=1e-6)

    train_bench = pd.read_parquet(folder / "train_benchmark_models.parquet")["v52_lgbm_ender20"]
    assert train_bench.index.equals(train.index[era_number > block])  # the first block only fits
    second = train[(era_number > block) & (era_number <= 2 * block)]
    fit_on = train[era_number <= block - synthetic.BENCHMARK_PURGE]
    np.testing.assert_allclose(train_bench.loc[second.index].to_numpy(), _ridge_ranks(fit_on, second, features),
                               atol=1e-6)
    third = train[(era_number > 2 * block) & (era_number <= 3 * block)]
    refit = train[era_number <= 2 * block - synthetic.BENCHMARK_PURGE]
    np.testing.assert_allclose(train_bench.loc[third.index].to_numpy(), _ridge_ranks(refit, third, features),
                               atol=1e-6)


def test_schema_reader_loads_int8_matrix(folder):
    meta = schema.read_feature_sets(folder / "features.json")
    features = schema.feature_set(meta, "medium")
    matrix, extra = schema.read_matrix(folder / "train.parquet", features, ["era", "target"])
    assert matrix.dtype == np.int8 and matrix.shape == (42 * ROWS, len(features))
    assert extra.index.name == "id" and list(extra.columns) == ["era", "target"]


def era_spearman(pred, target, eras):
    return np.array([spearmanr(pred[eras == e], target[eras == e])[0] for e in np.unique(eras)])


def test_latent_signal_ceiling_is_realistic(config):
    """The best possible model (the latent signal itself) scores about 0.05-0.15 per era."""
    plan = synthetic.make_plan(config)
    scores = []
    for number in range(1, plan.eras + 1):
        era = synthetic.generate_era(plan, number)
        scores.append(spearmanr(era.signal, era.targets["target"])[0])
    assert 0.05 < np.mean(scores) < 0.15


def test_linear_model_finds_the_planted_signal(frames):
    train, validation = frames["train"], frames["validation"]
    features = feature_columns(train)
    x_train = np.c_[train[features].to_numpy(np.float64), np.ones(len(train))]
    coef, *_ = np.linalg.lstsq(x_train, train["target"].to_numpy(np.float64), rcond=None)
    x_val = np.c_[validation[features].to_numpy(np.float64), np.ones(len(validation))]
    eras = validation["era"].to_numpy()
    target = validation["target"].to_numpy()
    model = era_spearman(x_val @ coef, target, eras).mean()
    rng = np.random.default_rng(0)
    random_means = [era_spearman(rng.random(len(validation)), target, eras).mean() for _ in range(20)]
    assert model > 0.02
    assert model > 3 * np.std(random_means)  # about p < 0.002 if there were no signal


def test_same_seed_same_data_other_seed_differs(tmp_path):
    small = dict(eras=14, rows_per_era=40, features=10)
    first = synthetic.write_synthetic(SyntheticConfig(data_dir=tmp_path / "a", seed=7, **small))
    again = synthetic.write_synthetic(SyntheticConfig(data_dir=tmp_path / "b", seed=7, **small))
    other = synthetic.write_synthetic(SyntheticConfig(data_dir=tmp_path / "c", seed=8, **small))
    for name in ("train", "validation", "live", "meta_model", "validation_example_preds"):
        a = pd.read_parquet(first / f"{name}.parquet")
        pd.testing.assert_frame_equal(a, pd.read_parquet(again / f"{name}.parquet"))
        assert not a.equals(pd.read_parquet(other / f"{name}.parquet"))
    assert (first / "features.json").read_text() == (again / "features.json").read_text()


def test_eras_do_not_depend_on_each_other(config):
    """Each era comes from its own generator: regenerating one alone gives the same rows."""
    plan = synthetic.make_plan(config)
    a, b = synthetic.generate_era(plan, 5), synthetic.generate_era(plan, 5)
    np.testing.assert_array_equal(a.features, b.features)
    assert a.ids == b.ids
    assert not np.array_equal(a.features, synthetic.generate_era(plan, 6).features)


def test_feature_names_are_stable_and_unique():
    names = synthetic.feature_names(3000)
    assert len(set(names)) == 3000
    assert synthetic.feature_names(10) == names[:10]


@pytest.mark.parametrize("field, value, message", [
    ("eras", 5, "--eras: Input should be greater than or equal to 12"),  # the option's bound, as on the CLI
    ("rows_per_era", 3, "--rows-per-era: Input should be greater than or equal to 10"),
    ("features", 2, "--features: Input should be greater than or equal to 8"),
])
def test_too_small_settings_are_config_errors(tmp_path, field, value, message):
    with pytest.raises(ConfigError) as info:
        synthetic.write_synthetic(SyntheticConfig(data_dir=tmp_path, **{field: value}))
    assert str(info.value) == message
    assert not (tmp_path / "synthetic").exists()


def test_download_synthetic_command(tmp_path):
    result = runner.invoke(app, ["download", "--synthetic", "--data-dir", str(tmp_path), "--eras", "20",
                                      "--rows-per-era", "50", "--features", "12"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "synthetic"
    assert result.output.strip() == f"Synthetic data written to {out}"
    train = pd.read_parquet(out / "train.parquet")
    validation = pd.read_parquet(out / "validation.parquet")
    assert len(train) + len(validation) == 20 * 50
    assert len(feature_columns(train)) == 12
    assert schema.find_version_dir(tmp_path) == out


def test_download_synthetic_rejects_too_few_eras(tmp_path):
    result = runner.invoke(app, ["download", "--synthetic", "--data-dir", str(tmp_path), "--eras", "3"])
    assert result.exit_code == 2  # click's range check, before any file is written
    assert not (tmp_path / "synthetic").exists()
