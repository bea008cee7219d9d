"""A synthetic data set in the exact Numerai v5 layout, with a weak planted signal.

`write_synthetic(SyntheticConfig)` writes `<data_dir>/synthetic/` with the files a real version
folder holds (train/validation/live Parquet, features.json, example predictions, meta model) plus
`live_round.json`. It serves the offline quickstart and the tests.

How the data is made (all per era, from a numpy Generator seeded with (seed, era), so any era is
reproducible on its own and the files are identical for the same arguments):
- features: correlated latents (noise plus one factor per feature group) turned into equal-frequency
  buckets 0..4 within the era, int8. In a few "missing" eras one group is all 2s, as on real data.
- latent signal: a linear part, a part whose sign flips between regimes of eras, and pairwise
  interactions; its variance is about 1 (less in eras with a missing group).
- targets: signal plus heavy noise, ranked within the era into 0, .25, .5, .75, 1 with the
  Numerai proportions 5/20/50/20/5 %. The latent signal's mean per-era Spearman with `target` is
  about 0.1 — the ceiling any model can reach, as on real data. Auxiliary targets mix in another
  signal and more noise (the 60-day ones more); the last validation eras have them unresolved (NaN).
- example predictions and the meta model: noisy copies of the signal, ranked into (0, 1).
- the benchmark model ({train,validation,live}_benchmark_models.parquet, column v52_lgbm_ender20,
  for BMC) is a real model fitted on the features, as Numerai's LightGBM benchmarks are: a ridge
  regression (closed form, numpy) of `target` on the features, walk-forward on the training eras
  (each block of eras predicted by a fit on the eras before it, purged), and for validation and
  live fitted on every training era. The first block only fits, so the training benchmark covers
  the later training eras only, as Numerai's does (BenchmarkModel).

Eras are streamed to Parquet with pyarrow's ParquetWriter, a row group every few eras, so memory
stays bounded by a few eras whatever the size (1 M rows x 780 features: see docs/readme/synthetic.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from numerflow import schema
from numerflow.config import SyntheticConfig
from numerflow.errors import ConfigError
from numerflow.files import dump_json, publish_set

TRAIN_SHARE = 0.7  # of the eras; the rest is validation, then one live era
GROUPS = ("intelligence", "wisdom", "charisma", "dexterity", "strength", "constitution", "agility", "serenity")
TARGET_VALUES = np.array([0.0, 0.25, 0.5, 0.75, 1.0], dtype=np.float32)
TARGET_CUTS = np.array([0.05, 0.25, 0.75, 0.95])  # cumulative shares of the five target buckets
ROW_GROUP_ROWS = 100_000  # whole eras are buffered up to about this many rows per row group
LIVE_ROUND = 1

# Signal recipe. Shares of the latent signal's variance: linear, regime-flipping, interactions.
LINEAR_SHARE, FLIP_SHARE, INTERACTION_SHARE = 0.4, 0.2, 0.4
SIGNAL_FEATURE_SHARE = 0.4  # features with a linear effect
FLIP_FEATURE_SHARE = 0.15  # features whose effect flips sign between regimes
REGIME_POSITIVE = 0.5  # chance that a regime keeps the flipping effects positive
TARGET_NOISE = 9.0  # noise std against a unit-variance signal: corr ≈ 1/sqrt(1 + 9²) ≈ 0.11
ERA_NOISE_SPREAD = 0.3  # log-normal spread of the noise between eras (some eras are easier)
GROUP_CORRELATION = 0.2  # correlation of two features' latents within a group
# uniform noise (variance 1/12) plus a Gaussian group factor with this std gives that correlation
GROUP_LOADING = math.sqrt(GROUP_CORRELATION / (1 - GROUP_CORRELATION) / 12)
MISSING_ERA_SHARE = 0.04  # eras where one feature group is missing (all 2s)
EXAMPLE_NOISE, META_MODEL_NOISE = 2.0, 1.5  # predictions' noise against the unit-variance signal
# The benchmark model: training eras in BENCHMARK_BLOCKS blocks, the first one only fitted on (Numerai's
# training benchmark starts late too); BENCHMARK_PURGE eras between a fit and the block it predicts,
# since 20-day targets overlap about 4 weekly eras (Numerai purges 8 of its 156-era chunks).
BENCHMARK_BLOCKS, BENCHMARK_PURGE = 4, 4
RIDGE_PENALTY = 0.01  # ridge penalty per unit of the Gram matrix's mean diagonal
# The benchmark column, named as Numerai names v5.2's main benchmark (validate's default for BMC).
BENCHMARK_MODEL = "v52_lgbm_ender20"


@dataclass(frozen=True)
class AuxTarget:
    name: str
    other_signal: float  # share (as a correlation) of a second signal that the main target lacks
    noise: float  # noise multiplier against the main target's
    shared_noise: float  # correlation of its noise with the main target's noise
    unresolved: str  # "20" or "60": how many last validation eras have it NaN (60 more than 20)


AUX_TARGETS = (
    AuxTarget("target_ender_60", 0.15, 1.25, 0.6, "60"),
    AuxTarget("target_cyrusd_20", 0.30, 1.0, 0.5, "20"),
    AuxTarget("target_cyrusd_60", 0.35, 1.25, 0.4, "60"),
    AuxTarget("target_teager2b_20", 0.40, 1.0, 0.5, "20"),
    AuxTarget("target_teager2b_60", 0.45, 1.25, 0.4, "60"),
    AuxTarget("target_jasper_20", 0.30, 1.1, 0.3, "20"),
)
# v5.2's main target is target_ender_20: the same values under both names.
TARGET_ALIAS = "target_ender_20"
TARGET_NAMES = [schema.TARGET, TARGET_ALIAS] + [t.name for t in AUX_TARGETS]

WORDS = (
    "abating", "ablest", "accursed", "adsorbed", "airtight", "alkaline", "amber", "ancient",
    "arcane", "ashen", "balmy", "bereft", "bilious", "blithe", "bramble", "brisk", "cardinal",
    "cerulean", "chalky", "crested", "dappled", "dewy", "distal", "dulcet", "eldritch", "errant",
    "fallow", "feral", "floodlit", "fluted", "gilded", "glacial", "hoary", "humid", "indigo",
    "jovial", "kindled", "languid", "lunar", "mottled", "nimble", "obtuse", "ochre", "placid",
    "quartz", "russet", "sallow", "tawny", "unadaptable", "vernal", "wistful", "zonal",
)


def feature_names(n: int) -> list[str]:
    """`n` distinct names feature_<word>_<word>_<word>, the same for every seed; the first k names
    do not depend on n. Index i maps to a word triple through a fixed bijection of 0..len(WORDS)³."""
    w = len(WORDS)
    space = w ** 3
    if n > space:
        raise ConfigError(f"at most {space} synthetic features can be named (asked for {n})")
    step = 7919  # a prime not dividing 52³, so i * step mod 52³ visits every triple once
    names = []
    for i in range(n):
        code = (i * step + 12345) % space
        names.append(f"feature_{WORDS[code // (w * w)]}_{WORDS[code // w % w]}_{WORDS[code % w]}")
    return names


def era_label(number: int) -> str:
    return f"{number:04d}"


def _seed_words(seed: int) -> int:
    return seed % (1 << 63)  # SeedSequence needs a non-negative entropy; negative seeds still work


@dataclass(frozen=True)
class Plan:
    """Everything shared by all eras of one data set: sizes, names, the signal's coefficients."""

    seed: int
    eras: int
    rows: int
    names: list[str]
    group_of: np.ndarray  # (F,) group index of each feature
    weights: np.ndarray  # (F,) linear effects, scaled so the linear part has variance ≈ 1
    flip_weights: np.ndarray  # (F,) effects whose sign follows the era's regime
    other_weights: np.ndarray  # (F,) the second signal some auxiliary targets carry
    pairs: np.ndarray  # (K, 2) feature indices of the interactions
    pair_weights: np.ndarray  # (K,)
    regime_sign: np.ndarray  # (eras + 2,) +1/-1 per era number (index 0 unused)
    missing_group: np.ndarray  # (eras + 2,) group index that is all 2s in that era, -1 for none
    feature_sets: dict

    @property
    def n_train(self) -> int:
        return max(1, min(self.eras - 1, round(self.eras * TRAIN_SHARE)))

    @property
    def n_unresolved(self) -> int:
        """Last validation eras whose 60-day auxiliary targets are NaN (20-day: half as many)."""
        return max(1, min(4, (self.eras - self.n_train) // 4))

    @property
    def live_era(self) -> int:
        return self.eras + 1


def _unit_scale(w: np.ndarray, var_per_term: float) -> np.ndarray:
    """Scale effects so their sum over (roughly independent) terms has variance ≈ 1."""
    total = float(np.sum(w.astype(np.float64) ** 2)) * var_per_term
    return (w / math.sqrt(total)).astype(np.float32) if total > 0 else w.astype(np.float32)


def make_plan(config: SyntheticConfig) -> Plan:
    # --eras, --rows-per-era and --features carry their minimums (SyntheticConfig): checked when built
    n_feat, eras = config.features, config.eras
    rng = np.random.default_rng([_seed_words(config.seed), 0])
    names = feature_names(n_feat)
    group_of = rng.permutation(np.arange(n_feat) % len(GROUPS))
    var_x = 2.0  # variance of a uniform bucket 0..4 around its mean 2

    has_effect = rng.random(n_feat) < SIGNAL_FEATURE_SHARE
    has_effect[rng.integers(n_feat)] = True
    weights = _unit_scale(rng.standard_normal(n_feat) * has_effect, var_x)
    flips = rng.random(n_feat) < FLIP_FEATURE_SHARE
    flips[rng.integers(n_feat)] = True
    flip_weights = _unit_scale(rng.standard_normal(n_feat) * flips, var_x)
    other = rng.random(n_feat) < SIGNAL_FEATURE_SHARE
    other_weights = _unit_scale(rng.standard_normal(n_feat) * other, var_x)
    n_pairs = max(4, n_feat // 10)
    first = rng.integers(0, n_feat, n_pairs)
    second = (first + rng.integers(1, n_feat, n_pairs)) % n_feat  # never a feature with itself
    pairs = np.stack([first, second], axis=1)
    pair_weights = _unit_scale(rng.standard_normal(n_pairs), var_x * var_x)

    # Regimes: blocks of 4..20 eras; the flipping effects point either way, so no fixed sign is learnable.
    regime_sign = np.ones(eras + 2, dtype=np.float32)
    start = 1
    while start < eras + 2:
        length = int(rng.integers(4, 21))
        regime_sign[start:start + length] = 1.0 if rng.random() < REGIME_POSITIVE else -1.0
        start += length
    missing_group = np.full(eras + 2, -1, dtype=np.int64)
    n_missing = max(1, round(eras * MISSING_ERA_SHARE))
    missing_eras = rng.choice(np.arange(1, eras + 1), size=n_missing, replace=False)
    missing_group[missing_eras] = rng.integers(0, len(GROUPS), n_missing)

    # small ⊂ medium ⊂ all, chosen, as Numerai did, mostly by usefulness (noisy |effect|).
    usefulness = (np.abs(weights) + np.abs(flip_weights)) * np.exp(0.7 * rng.standard_normal(n_feat))
    by_use = np.argsort(-usefulness, kind="stable")
    n_small = min(n_feat, max(5, n_feat // 20))
    n_medium = min(n_feat, max(n_small, round(n_feat * 0.4)))
    pick = lambda idx: [names[i] for i in sorted(idx)]  # noqa: E731 - keeps column order
    feature_sets = {"small": pick(by_use[:n_small]), "medium": pick(by_use[:n_medium]), "all": list(names)}
    for g, group in enumerate(GROUPS):
        feature_sets[group] = [names[i] for i in range(n_feat) if group_of[i] == g]
    return Plan(seed=config.seed, eras=eras, rows=config.rows_per_era, names=names, group_of=group_of,
                weights=weights, flip_weights=flip_weights, other_weights=other_weights, pairs=pairs,
                pair_weights=pair_weights, regime_sign=regime_sign, missing_group=missing_group,
                feature_sets=feature_sets)


@dataclass
class Era:
    """One generated era: features as (F, rows) int8 (one contiguous row per column), the latent
    signal, targets (float32 arrays by name, all NaN for live), example and meta-model scores."""

    number: int
    data_type: str
    ids: list[str]
    features: np.ndarray
    signal: np.ndarray
    targets: dict
    example: np.ndarray
    meta_model: np.ndarray


def row_ids(plan: Plan, era: int) -> list[str]:
    """"n" + 15 hex digits: a fixed bijection of (seed, row number) on 60 bits, so ids are unique
    within a data set and look random."""
    mask = np.uint64((1 << 60) - 1)
    first = (era - 1) * plan.rows
    x = np.arange(first, first + plan.rows, dtype=np.uint64)
    offset = (plan.seed * 0x9E3779B97F4A7C15 + 0x2545F4914F6CDD1D) & ((1 << 60) - 1)  # row 0 must not map to 0
    x = (x + np.uint64(offset)) & mask
    with np.errstate(over="ignore"):
        for mult in (0xBF58476D1CE4E5B9, 0x94D049BB133111EB):
            x = (x * np.uint64(mult)) & mask  # odd multiplier: a bijection mod 2**60
            x ^= x >> np.uint64(29)  # xor with a right shift: a bijection too
    return [f"n{v:015x}" for v in x.tolist()]


def equal_buckets(latent: np.ndarray) -> np.ndarray:
    """Bucket each row of a (F, rows) array into 0..4 by rank within the row, 20 % each, int8.
    Quantising to int16 lets numpy use its radix sort: 4x faster than sorting floats."""
    n = latent.shape[1]
    scale = 32000.0 / max(float(np.abs(latent).max()), 1e-6)  # use the int16 range: few ties
    keys = (latent * scale).astype(np.int16)
    order = np.argsort(keys, axis=1, kind="stable")
    buckets = np.empty(keys.shape, dtype=np.int8)
    by_rank = (np.arange(n) * 5 // n).astype(np.int8)
    np.put_along_axis(buckets, order, np.broadcast_to(by_rank, keys.shape), axis=1)
    return buckets


def _ranks01(values: np.ndarray) -> np.ndarray:
    """(rank + 0.5) / n: values ranked into (0, 1)."""
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    return (ranks + 0.5) / len(values)


def bucket_target(values: np.ndarray) -> np.ndarray:
    """Rank within the era into 0, .25, .5, .75, 1 with shares 5/20/50/20/5 %."""
    return TARGET_VALUES[np.searchsorted(TARGET_CUTS, _ranks01(values))]


def generate_era(plan: Plan, number: int) -> Era:
    """Era `number` (1-based; plan.live_era is live), independent of every other era."""
    rng = np.random.default_rng([_seed_words(plan.seed), 1, number])
    n_feat, n = len(plan.names), plan.rows
    factors = rng.standard_normal((len(GROUPS), n), dtype=np.float32) * GROUP_LOADING
    latent = rng.random((n_feat, n), dtype=np.float32)  # uniform: 4x cheaper than normals; only ranks matter
    latent += factors[plan.group_of]
    features = equal_buckets(latent)
    missing = plan.missing_group[number]
    if missing >= 0:
        features[plan.group_of == missing] = 2

    x = features.astype(np.float32) - 2.0
    linear = plan.weights @ x
    flipping = (plan.flip_weights @ x) * plan.regime_sign[number]
    pairs = (x[plan.pairs[:, 0]] * x[plan.pairs[:, 1]]).T @ plan.pair_weights
    signal = (math.sqrt(LINEAR_SHARE) * linear + math.sqrt(FLIP_SHARE) * flipping
              + math.sqrt(INTERACTION_SHARE) * pairs).astype(np.float64)
    other = (plan.other_weights @ x).astype(np.float64)

    noise_std = TARGET_NOISE * math.exp(ERA_NOISE_SPREAD * rng.standard_normal())
    main_noise = rng.standard_normal(n)
    targets = {schema.TARGET: bucket_target(signal + noise_std * main_noise)}
    targets[TARGET_ALIAS] = targets[schema.TARGET]
    n_val_first = plan.n_train + 1
    for aux in AUX_TARGETS:
        own = rng.standard_normal(n)
        mixed = math.sqrt(1 - aux.other_signal ** 2) * signal + aux.other_signal * other
        noise = aux.shared_noise * main_noise + math.sqrt(1 - aux.shared_noise ** 2) * own
        values = bucket_target(mixed + aux.noise * noise_std * noise)
        unresolved = plan.n_unresolved if aux.unresolved == "60" else math.ceil(plan.n_unresolved / 2)
        if number > plan.eras - unresolved and number >= n_val_first:
            values = np.full(n, np.nan, dtype=np.float32)
        targets[aux.name] = values
    example = _ranks01(signal + EXAMPLE_NOISE * rng.standard_normal(n))
    meta_model = _ranks01(signal + META_MODEL_NOISE * rng.standard_normal(n))

    if number == plan.live_era:
        data_type = "live"
        targets = {name: np.full(n, np.nan, dtype=np.float32) for name in targets}
    else:
        data_type = "train" if number <= plan.n_train else "validation"
    return Era(number=number, data_type=data_type, ids=row_ids(plan, number), features=features,
               signal=signal, targets=targets, example=example, meta_model=meta_model)


class BenchmarkModel:
    """The benchmark model's predictions, era by era, for eras given in order (train, validation,
    live): a ridge regression of the centred target on the centred features. Training eras are cut
    into blocks; each block after the first is predicted by a fit on the eras before it less the
    last BENCHMARK_PURGE, and validation and live eras by a fit on every training era. Only the
    running Gram matrix and moment are kept (and the purged eras' own), so memory does not grow
    with the eras."""

    def __init__(self, plan: Plan):
        n_feat = len(plan.names)
        self.n_train = plan.n_train
        self.block = max(1, math.ceil(plan.n_train / BENCHMARK_BLOCKS))
        self.gram, self.moment = np.zeros((n_feat, n_feat)), np.zeros(n_feat)
        self.purged: list[tuple[np.ndarray, np.ndarray]] = []  # the latest eras, not yet in the fit
        self.weights: np.ndarray | None = None

    def first_predicted_era(self) -> int:
        return self.block + 1

    def predict(self, era: Era) -> np.ndarray | None:
        """The era's benchmark predictions ranked into (0, 1), None for the first training block;
        a training era is then learnt from."""
        if era.number == self.n_train + 1:  # validation (and live): every training era
            self._take_purged(keep=0)
            self._refit()
        elif era.number <= self.n_train and (era.number - 1) % self.block == 0 and era.number > 1:
            self._refit()
        x = era.features.astype(np.float32) - 2.0
        predictions = None if self.weights is None else _ranks01(self.weights @ x)
        if era.data_type == "train":
            y = era.targets[schema.TARGET].astype(np.float64) - 0.5
            self.purged.append(((x @ x.T).astype(np.float64), x.astype(np.float64) @ y))
            self._take_purged(keep=BENCHMARK_PURGE)
        return predictions

    def _take_purged(self, keep: int) -> None:
        while len(self.purged) > keep:
            gram, moment = self.purged.pop(0)
            self.gram += gram
            self.moment += moment

    def _refit(self) -> None:
        if not np.trace(self.gram) > 0:  # nothing fitted yet (the purge took every earlier era)
            return
        penalty = RIDGE_PENALTY * float(np.trace(self.gram)) / len(self.moment)
        self.weights = np.linalg.solve(self.gram + penalty * np.eye(len(self.moment)), self.moment).astype(np.float32)


def _with_pandas_index(fields: list[pa.Field], sample: dict) -> pa.Schema:
    """An Arrow schema whose pandas metadata makes `id` the index when pandas reads the file,
    as in Numerai's own files. `sample` is one row of values, used only to derive that metadata."""
    import pandas as pd

    frame = pd.DataFrame({k: v for k, v in sample.items() if k != schema.ID},
                         index=pd.Index(sample[schema.ID], name=schema.ID))
    metadata = pa.Table.from_pandas(frame, preserve_index=True).schema.metadata
    return pa.schema(fields, metadata=metadata)


def data_schema(plan: Plan) -> pa.Schema:
    fields = [pa.field(schema.ERA, pa.string()), pa.field(schema.DATA_TYPE, pa.string())]
    fields += [pa.field(name, pa.int8()) for name in plan.names]
    fields += [pa.field(name, pa.float32()) for name in TARGET_NAMES]
    fields.append(pa.field(schema.ID, pa.string()))
    sample = {schema.ERA: ["0001"], schema.DATA_TYPE: ["train"], schema.ID: ["n000000000000000"]}
    sample.update({name: np.zeros(1, np.int8) for name in plan.names})
    sample.update({name: np.zeros(1, np.float32) for name in TARGET_NAMES})
    return _with_pandas_index(fields, sample)


def era_table(era: Era, table_schema: pa.Schema) -> pa.Table:
    n = len(era.ids)
    columns = [pa.array([era_label(era.number)] * n, pa.string()), pa.array([era.data_type] * n, pa.string())]
    columns += [pa.array(row) for row in era.features]
    columns += [pa.array(era.targets[name], pa.float32()) for name in TARGET_NAMES]
    columns.append(pa.array(era.ids, pa.string()))
    return pa.Table.from_arrays(columns, schema=table_schema)


class EraWriter:
    """Stream eras into one Parquet file: whole eras buffered into row groups of ~ROW_GROUP_ROWS."""

    def __init__(self, path: Path, table_schema: pa.Schema):
        self.path, self.schema = path, table_schema
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.writer = pq.ParquetWriter(path, table_schema)

    def add(self, table: pa.Table) -> None:
        self.buffer.append(table)
        self.buffered += table.num_rows
        if self.buffered >= ROW_GROUP_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            table = pa.concat_tables(self.buffer)
            self.writer.write_table(table, row_group_size=table.num_rows)
            self.buffer, self.buffered = [], 0

    def close(self) -> None:
        self.flush()
        self.writer.close()


def _write_eras(path: Path, plan: Plan, numbers, table_schema: pa.Schema, on_era) -> None:
    """Stream eras into `path` (a temporary member of the set write_synthetic publishes)."""
    writer = EraWriter(path, table_schema)
    try:
        for number in numbers:
            era = generate_era(plan, number)
            writer.add(era_table(era, table_schema))
            on_era(era)
    finally:
        writer.close()


def _write_scores(path: Path, ids: list[str], columns: dict) -> None:
    """A small indexed file (example predictions, meta model): index `id`, the given columns."""
    import pandas as pd

    pd.DataFrame(columns, index=pd.Index(ids, name=schema.ID)).to_parquet(path)


def write_synthetic(config: SyntheticConfig) -> Path:
    """Write the synthetic data set into `<data_dir>/synthetic/` and return that folder."""
    plan = make_plan(config)
    out = Path(config.data_dir) / schema.SYNTHETIC_VERSION
    out.mkdir(parents=True, exist_ok=True)
    table_schema = data_schema(plan)
    benchmark_model = BenchmarkModel(plan)
    kept = {kind: {"ids": [], "eras": [], "example": [], "meta": [], "benchmark": []}
            for kind in ("train", "validation", "live")}

    def keep(era: Era) -> None:
        """Collect what the side files hold: the benchmark model's predictions where it has them
        (not the first training block), example predictions and meta model for validation and live."""
        benchmark = benchmark_model.predict(era)
        into = kept[era.data_type]
        if era.data_type == "train" and benchmark is None:
            return
        into["ids"].extend(era.ids)
        into["eras"].extend([era_label(era.number)] * len(era.ids))
        into["benchmark"].append(benchmark)
        if era.data_type != "train":
            into["example"].append(era.example)
            into["meta"].append(era.meta_model)

    # One set, published as one: a run killed or failing halfway (another seed, a full disk)
    # leaves the previous set whole; the folder's manifest, written last, records every file.
    with publish_set(out, schema.VERSION_MANIFEST_FILE, {"synthetic": {k: v for k, v in vars(config).items() if k != "data_dir"}}) as files:
        _write_eras(files.path(schema.TRAIN_FILE), plan, range(1, plan.n_train + 1), table_schema, keep)
        _write_eras(files.path(schema.VALIDATION_FILE), plan, range(plan.n_train + 1, plan.eras + 1), table_schema, keep)
        _write_eras(files.path(schema.LIVE_FILE), plan, [plan.live_era], table_schema, keep)

        as_f32 = lambda parts: np.concatenate(parts).astype(np.float32)  # noqa: E731
        val, live = kept["validation"], kept["live"]
        _write_scores(files.path(schema.VALIDATION_EXAMPLE_FILE), val["ids"], {schema.PREDICTION: as_f32(val["example"])})
        _write_scores(files.path(schema.LIVE_EXAMPLE_FILE), live["ids"], {schema.PREDICTION: as_f32(live["example"])})
        _write_scores(files.path(schema.META_MODEL_FILE), val["ids"],
                      {schema.ERA: val["eras"], schema.META_MODEL: as_f32(val["meta"])})
        for kind, name in ((kept["train"], schema.TRAIN_BENCHMARK_FILE), (val, schema.VALIDATION_BENCHMARK_FILE),
                           (live, schema.LIVE_BENCHMARK_FILE)):
            benchmark = as_f32(kind["benchmark"]) if kind["benchmark"] else np.empty(0, np.float32)
            _write_scores(files.path(name), kind["ids"], {schema.ERA: kind["eras"], BENCHMARK_MODEL: benchmark})
        dump_json(files.path(schema.FEATURES_FILE), {"feature_sets": plan.feature_sets, "targets": list(TARGET_NAMES)})
        dump_json(files.path(schema.LIVE_ROUND_FILE), {"round": LIVE_ROUND})
    return out
