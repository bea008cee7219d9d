"""export stage: one checkpoint (or a rank-averaged ensemble) as a cloudpickled
`predict(live_features, live_benchmark_models=None) -> DataFrame` for Numerai's hosted model
uploads.

Numerai runs the pickle in its own environment, where numerflow is not installed and torch may not
be either. So the pickle carries no numerflow code and no torch objects: the MLP's weights are
stored as numpy arrays (BatchNorm folded into a scale and a shift) with the feature list, and the
function evaluates the network with numpy in row batches. tests/test_export.py checks that an
unpickled function in a fresh process without numerflow gives the same ranks as `numerflow predict`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from numerflow.config import ExportConfig
from numerflow.errors import CheckpointError
from numerflow.files import atomic_path


@dataclass
class ExportResult:
    out: Path
    models: list[Path]
    features: int
    size: int
    python: str

    def __str__(self) -> str:
        return (f"Exported {', '.join(str(m) for m in self.models)} ({self.features} features) to {self.out} "
                f"({self.size / 1024:.0f} KB)\n"
                f"Upload it at numer.ai/models (Upload Model) and choose Python {self.python}: "
                f"a cloudpickle only loads under the Python version that wrote it")


def numpy_layers(model) -> list[tuple]:
    """The MLP's layers (eval mode) as numpy: ("linear", W^T, b), ("relu",), ("silu",),
    ("affine", scale, shift) for BatchNorm with its running statistics; dropout is dropped."""
    from torch import nn

    layers = []
    for module in model.net:
        if isinstance(module, nn.Linear):
            bias = module.bias.detach().double().numpy() if module.bias is not None else None
            layers.append(("linear", module.weight.detach().double().numpy().T.copy(), bias))
        elif isinstance(module, nn.ReLU):
            layers.append(("relu",))
        elif isinstance(module, nn.SiLU):
            layers.append(("silu",))
        elif isinstance(module, nn.BatchNorm1d):
            scale = (module.weight.detach().double() / (module.running_var.double() + module.eps).sqrt()).numpy()
            shift = module.bias.detach().double().numpy() - module.running_mean.double().numpy() * scale
            layers.append(("affine", scale, shift))
        elif isinstance(module, (nn.Dropout, nn.Identity)):
            continue
        else:
            raise CheckpointError(f"cannot export a {type(module).__name__} layer (supported: Linear, ReLU, "
                                  f"SiLU, BatchNorm1d, Dropout)")
    return layers


def build_predict(members: list[dict], weights: list[float], features: list[str], neutralize: float,
                  centre: float, scale: float, batch_rows: int = 65536):
    """The self-contained predict function. Everything it uses is an argument or imported inside it,
    so cloudpickle stores it by value with no reference to numerflow."""

    def predict(live_features, live_benchmark_models=None):
        import numpy as np
        import pandas as pd

        def forward(x, layers):
            for layer in layers:
                if layer[0] == "linear":
                    x = x @ layer[1]
                    if layer[2] is not None:
                        x += layer[2]
                elif layer[0] == "relu":
                    x = np.maximum(x, 0.0)
                elif layer[0] == "silu":
                    x = x / (1.0 + np.exp(-x))
                else:  # affine: folded BatchNorm
                    x = x * layer[1] + layer[2]
            return x

        def as_inputs(frame):
            values = frame.to_numpy(dtype=np.float64) * unit
            if np.isnan(values).any():
                values = np.where(np.isnan(values), 2.0, values)  # Numerai's "missing" value is the middle bucket
            return values

        def ranks(values, eras):
            series = pd.Series(values)
            grouped = series.groupby(eras)
            return ((grouped.rank(method="average") - 0.5) / grouped.transform("count")).to_numpy()

        missing = [f for f in features if f not in live_features.columns]
        if missing:
            raise ValueError(f"live_features lacks {len(missing)} feature(s) the model needs: {missing[:10]}")
        # v5 features are integers 0..4; older releases store floats 0, .25, .5, .75, 1 (decided once,
        # on the whole frame, so that a small batch of low values is never rescaled by mistake)
        floats = all(pd.api.types.is_float_dtype(live_features[f]) for f in features)
        unit = 4.0 if floats and max(float(live_features[f].max()) for f in features) <= 1.0 else 1.0
        n = len(live_features)
        eras = (live_features["era"].astype(str).to_numpy() if "era" in live_features.columns
                else np.zeros(n, dtype=np.int8))
        combined = np.zeros(n)
        for member, weight in zip(members, weights):
            raw = np.empty(n)
            for start in range(0, n, batch_rows):  # rows first, then columns: one batch copied at a time
                x = (as_inputs(live_features.iloc[start:start + batch_rows][member["features"]]) - centre) * scale
                heads = forward(x, member["layers"])
                raw[start:start + len(x)] = heads[:, 0] if member["predict_with"] == "main" else heads.mean(axis=1)
            combined += weight * ranks(raw, eras)
        result = ranks(combined, eras)
        if neutralize > 0:
            neutral = np.empty(n)
            for era in np.unique(eras):
                rows = np.flatnonzero(eras == era)
                x = as_inputs(live_features.iloc[rows][features])
                x = np.hstack([x - x.mean(axis=0), np.ones((len(rows), 1))])
                beta = np.linalg.lstsq(x, result[rows], rcond=1e-6)[0]
                neutral[rows] = result[rows] - neutralize * (x @ beta)
            result = ranks(neutral, eras)
        return pd.DataFrame({"prediction": result}, index=live_features.index)

    return predict


def export(config: ExportConfig) -> ExportResult:
    import cloudpickle

    from numerflow.model import FEATURE_CENTRE, FEATURE_SCALE
    from numerflow.stages.predict import ensemble_weights, refuse_overwriting_inputs, union_of_features
    from numerflow.checkpoint import load_checkpoint, load_model

    model_paths = [Path(p) for p in config.models]
    weights = ensemble_weights(config.weights, len(model_paths))
    out = Path(config.out) if config.out is not None else model_paths[0].with_suffix(".pkl")
    refuse_overwriting_inputs(out, model_paths)
    members = []
    for path in model_paths:
        checkpoint = load_checkpoint(path)
        members.append({"features": list(checkpoint["features"]), "layers": numpy_layers(load_model(checkpoint)),
                        "predict_with": checkpoint.get("predict_with", "main")})
    features = union_of_features([m["features"] for m in members])
    function = build_predict(members, [float(w) for w in weights], features, float(config.neutralize),
                             FEATURE_CENTRE, FEATURE_SCALE)
    with atomic_path(out) as tmp:
        tmp.write_bytes(cloudpickle.dumps(function))
    return ExportResult(out=out, models=model_paths, features=len(features), size=out.stat().st_size,
                        python=f"{sys.version_info.major}.{sys.version_info.minor}")
