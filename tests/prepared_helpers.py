"""Small prepared folders (the layout `numerflow prepare` writes) with a planted signal and an
auxiliary target with gaps, for the training tests (test_train, test_distributed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

N_FEATURES = 12
FEATURES = [f"feature_f{i:02d}" for i in range(N_FEATURES)]
TARGETS = ["target", "target_aux_20"]


def prepared_frame(eras: list[str], rows_per_era: int, seed: int) -> pd.DataFrame:
    """Prepared layout (index id, era, int8 features, float32 targets main first) with a planted
    signal; the auxiliary target is NaN in a third of the rows."""
    rng = np.random.default_rng(seed)
    n = len(eras) * rows_per_era
    x = rng.integers(0, 5, (n, N_FEATURES)).astype(np.int8)
    signal = (x[:, 0] - 2.0) - 0.7 * (x[:, 1] - 2.0) + 0.5 * (x[:, 2] - 2.0) * (x[:, 3] - 2.0)
    noisy = signal + rng.normal(0, 3.0, n)
    # Bucket the target into 0, .25, .5, .75, 1 like Numerai's.
    target = np.digitize(noisy, np.quantile(noisy, [0.05, 0.25, 0.75, 0.95])) / 4
    aux = np.digitize(noisy + rng.normal(0, 1, n), np.quantile(noisy, [0.05, 0.25, 0.75, 0.95])) / 4
    aux[rng.random(n) < 0.33] = np.nan
    frame = pd.DataFrame(x, columns=FEATURES, index=pd.Index([f"n{seed}{i:014x}" for i in range(n)], name="id"))
    frame.insert(0, "era", np.repeat(eras, rows_per_era))
    frame["target"] = target.astype(np.float32)
    frame["target_aux_20"] = aux.astype(np.float32)
    return frame


def write_prepared(folder: Path, train_eras: int = 20, valid_eras: int = 8, rows_per_era: int = 120) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    train_labels = [f"{i:04d}" for i in range(1, train_eras + 1)]
    valid_labels = [f"{i:04d}" for i in range(train_eras + 5, train_eras + 5 + valid_eras)]
    prepared_frame(train_labels, rows_per_era, seed=1).to_parquet(folder / "train.parquet")
    prepared_frame(valid_labels, rows_per_era, seed=2).to_parquet(folder / "validation.parquet")
    (folder / "manifest.json").write_text(json.dumps({
        "version": "test", "feature_set": "all", "features": FEATURES, "target": "target", "targets": TARGETS,
        "eras_train": train_labels, "eras_validation": valid_labels, "embargo": 4, "downsample": 1,
        "rows_train": train_eras * rows_per_era, "rows_validation": valid_eras * rows_per_era, "sources": {}}))
    return folder
