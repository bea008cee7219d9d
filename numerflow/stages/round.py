"""The weekly job: `numerflow round` predicts and submits the current round for every model in
numerflow.toml, unattended and idempotent.

    [round]                       # optional: defaults for the command's flags
    data_dir = "data"
    version = "v5.2"

    [models.my_model]             # one table per Numerai model name
    model = "models/a.pt"

    [models.my_ensemble]
    models = ["models/a.pt", "models/b.pt"]
    weights = [2, 1]
    neutralize = 0.5

    [models.my_chosen_ensemble]
    ensemble = "ensembles/wide"   # a fitted `numerflow ensemble`: its members and weights

Order: take the lock, ask Numerai for the current round, skip every model with a receipt for it
(nothing to do: exit 0, even when the round has closed), refuse a closed round, check the model
names against the account, download the live data if the local copy is older, then predict and
submit model by model. A failing model is logged and the others still go through; the job fails
(non-zero exit) when any model failed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from numerflow import schema
from numerflow.config import DownloadConfig, PredictConfig, RoundConfig, SubmitConfig
from numerflow.errors import AuthError, ConfigError, NumerflowError, SubmissionError
from numerflow.files import round_lock

LOCK_FILE = schema.LOCK_FILE
MODEL_KEYS = {"model", "models", "ensemble", "weights", "neutralize", "neutralize_benchmark"}


@dataclass
class ModelSpec:
    name: str  # the Numerai model name
    checkpoints: list[Path]
    weights: list[float] | None = None
    neutralize: float = 0.0
    ensemble: Path | None = None  # a fitted ensemble folder, in place of checkpoints and weights
    neutralize_benchmark: float | None = None  # None: an ensemble's stored proportion, else 0

    def predict_models(self) -> dict:
        """PredictConfig's model fields: the checkpoints and weights, or the ensemble."""
        if self.ensemble is not None:
            return {"ensemble": self.ensemble}
        return {"models": self.checkpoints, "weights": self.weights}


@dataclass
class RoundResult:
    round: int | None
    dry_run: bool = False
    lines: list[str] = field(default_factory=list)  # one per model, as logged
    submitted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already submitted this round
    failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def __str__(self) -> str:
        done = "checked (dry run)" if self.dry_run else "submitted"
        summary = (f"Round {self.round}: {len(self.submitted)} {done}, {len(self.skipped)} already done, "
                   f"{len(self.failed)} failed")
        return summary + (f" ({', '.join(self.failed)})" if self.failed else "")


# ---- numerflow.toml's [models.<name>] tables

def model_specs(table: dict, source: str = "numerflow.toml") -> list[ModelSpec]:
    """Parse and check every [models.<name>] table before anything runs."""
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: 'models' must be [models.<name>] tables, one per Numerai model")
    if not table:
        raise ConfigError(f"{source}: no [models.<name>] tables; add one per Numerai model, e.g. "
                          f"[models.my_model] with model = \"models/model.pt\"")
    specs = []
    for name, options in table.items():
        where = f"{source}: [models.{name}]"
        if not isinstance(options, dict):
            raise ConfigError(f"{where} must be a table")
        unknown = sorted(set(options) - MODEL_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(MODEL_KEYS))})")
        if sum(key in options for key in ("model", "models", "ensemble")) != 1:
            raise ConfigError(f"{where}: give exactly one of model = \"path.pt\", models = [\"a.pt\", ...] or "
                              f"ensemble = \"ensembles/<name>\"")
        if "ensemble" in options:
            if not isinstance(options["ensemble"], str) or "weights" in options:
                raise ConfigError(f"{where}: ensemble must be a folder path (its weights come with it)")
            specs.append(ModelSpec(str(name), [], None, _neutralize(options, where), Path(options["ensemble"]),
                                   _neutralize(options, where, "neutralize_benchmark")))
            continue
        paths = [options["model"]] if "model" in options else options["models"]
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
            raise ConfigError(f"{where}: model(s) must be checkpoint paths")
        neutralize = _neutralize(options, where)
        weights = options.get("weights")
        if weights is not None and (not isinstance(weights, list) or len(weights) != len(paths)
                                    or not all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights)):
            raise ConfigError(f"{where}: weights must be a list with one number per checkpoint")
        specs.append(ModelSpec(str(name), [Path(p) for p in paths],
                               [float(w) for w in weights] if weights is not None else None, float(neutralize),
                               neutralize_benchmark=_neutralize(options, where, "neutralize_benchmark")))
    return specs


def _neutralize(options: dict, where: str, key: str = "neutralize") -> float | None:
    """neutralize (default 0) or neutralize_benchmark (default None: the ensemble's stored value, else 0)."""
    if key not in options:
        return 0.0 if key == "neutralize" else None
    neutralize = options[key]
    if isinstance(neutralize, bool) or not isinstance(neutralize, (int, float)) or not 0 <= neutralize <= 1:
        raise ConfigError(f"{where}: {key} must be a number within [0, 1]")
    return float(neutralize)


# ---- the job

def _stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def ensure_live_data(config: RoundConfig, current: int) -> Path:
    """The current round's live.parquet, downloading it (live files only) when the local copy is
    missing or older."""
    from numerflow.stages.download import download

    try:
        version_dir = schema.find_version_dir(config.data_dir, config.version)
        have = schema.read_live_round(version_dir) if (version_dir / schema.LIVE_FILE).is_file() else None
    except NumerflowError:
        have = None
    if have != current:
        version_dir = download(DownloadConfig(data_dir=config.data_dir, version=config.version, live_only=True)).directory
    have = schema.read_live_round(version_dir)
    if have != current:
        raise SubmissionError(f"{version_dir}: live data is for round {have} after downloading, "
                              f"but the current round is {current}")
    return version_dir / schema.LIVE_FILE


def run_round(config: RoundConfig, say: Callable[[str], None] = print) -> RoundResult:
    """See the module docstring. `say` gets one line per model (and a few about the round)."""
    from numerflow import numerai
    from numerflow.stages.predict import predict
    from numerflow.stages.submit import read_receipt, receipt_path, submit

    specs = model_specs(config.models, str(config.config_file))
    with round_lock(Path(config.data_dir) / LOCK_FILE):
        public_id, secret_key = numerai.credentials()
        if not (public_id and secret_key) and not config.dry_run:
            raise AuthError(numerai.missing_credentials_message(public_id, secret_key))
        client = numerai.client(public_id, secret_key)
        current = numerai.current_round(client)
        result = RoundResult(round=current, dry_run=config.dry_run)

        def log(name: str, message: str) -> None:
            line = f"{_stamp()} round {current} {name}: {message}"
            result.lines.append(line)
            say(line)

        pending = []
        for spec in specs:
            receipt = read_receipt(receipt_path(config.receipts_dir, current, spec.name))
            if receipt is not None:
                result.skipped.append(spec.name)
                log(spec.name, f"already submitted (submission {receipt.get('submission_id')})")
            else:
                pending.append(spec)
        if not pending:
            return result
        if not numerai.round_is_open(client):
            raise SubmissionError(f"round {current} is closed for submissions; not submitted: "
                                  f"{', '.join(s.name for s in pending)}")
        account = numerai.model_ids(client) if public_id and secret_key else None
        live = ensure_live_data(config, current)

        for spec in pending:
            try:
                if account is not None and spec.name not in account:
                    raise SubmissionError(f"unknown model name '{spec.name}' (this account's models: "
                                          f"{', '.join(sorted(account)) or 'none'})")
                out = Path(config.predictions_dir) / f"{spec.name}_{current}.csv"
                predict(PredictConfig(**spec.predict_models(), data=live, out=out,
                                      neutralize=spec.neutralize, neutralize_benchmark=spec.neutralize_benchmark,
                                      device=config.device))
                submitted = submit(SubmitConfig(predictions=out, model_name=spec.name, live=live,
                                                data_dir=config.data_dir, receipts_dir=config.receipts_dir,
                                                dry_run=config.dry_run),
                                   client=client, lock_held=True)
            except Exception as exc:  # one model's failure must not stop the others
                result.failed.append(spec.name)
                reason = str(exc) if isinstance(exc, NumerflowError) else f"{type(exc).__name__}: {exc}"
                reason = reason.replace(secret_key, "***") if secret_key else reason
                log(spec.name, f"FAILED: {reason}")
                continue
            result.submitted.append(spec.name)
            if config.dry_run:
                log(spec.name, f"dry run: {out} passes every check ({submitted.rows:,} rows); nothing uploaded")
            else:
                if submitted.recovered:
                    log(spec.name, f"an interrupted run had submitted it (submission {submitted.submission_id} "
                                   f"found on Numerai); not uploaded again, receipt {submitted.receipt}")
                else:
                    log(spec.name, f"submitted {out} (submission {submitted.submission_id}, receipt {submitted.receipt})")
        return result
