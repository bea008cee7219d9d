"""The whole pipeline on built-in synthetic data, offline, in a fresh folder: the first thing a
new user runs, and the proof that every stage chains with the next."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from numerflow import config as cfg
from numerflow.config_selection import CompareConfig
from numerflow.errors import ConfigError

MARKER = ".numerflow-quickstart"  # marks a folder quickstart made: a rerun may overwrite what is in it


@dataclass
class QuickstartResult:
    folder: Path
    artifacts: dict[str, Path] = field(default_factory=dict)
    validation: str = ""
    comparison: str = ""  # the model against the example predictions, on the same eras
    seconds: float = 0.0

    def __str__(self) -> str:
        lines = [f"Quickstart finished in {self.seconds:.0f} s in {self.folder}", "Artifacts:"]
        lines += [f"  {name:<12} {path}" for name, path in self.artifacts.items()]
        lines += ["Validation:", self.validation]
        if self.comparison:
            lines += ["Compared with the example predictions:", self.comparison]
        return "\n".join(lines)


def random_spread(per_era: list[dict]) -> float:
    """Standard deviation of the mean era-Spearman that random predictions would get on these
    eras (each era's Spearman has variance 1/(rows-1) under no signal): the yardstick that tells
    a real score from luck."""
    scored = [era["rows"] for era in per_era if era.get("spearman") is not None and era["rows"] > 1]
    return math.sqrt(sum(1 / (rows - 1) for rows in scored)) / len(scored) if scored else float("nan")


def signal_line(report_data: dict) -> str:
    mean = report_data["spearman"]["mean"]
    spread = random_spread(report_data["per_era"])
    return (f"mean era-Spearman {mean:.4f} = {mean / spread:.1f} x the spread of random predictions "
            f"on the same eras ({spread:.4f})")


def claim_folder(folder: Path) -> None:
    """quickstart writes data/, models/, predictions/... inside `folder`: never over a user's own
    project (`--dir .`), only into a new or empty folder or one an earlier quickstart made."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder}: exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / MARKER).is_file():
        raise ConfigError(f"{folder}: not empty and not made by `numerflow quickstart`; choose a new --dir "
                          f"(quickstart would overwrite data/, models/ and predictions/ in it)")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("made by numerflow quickstart: a rerun may overwrite this folder\n")


def quickstart(folder: Path, say: Callable[[str], None] = print) -> QuickstartResult:
    """download --synthetic → prepare → train → validate → predict → submit --dry-run → compare in `folder`.
    Paths are all under `folder`, so it never touches the user's own data/ or models/."""
    from numerflow.stages.compare import compare
    from numerflow.stages.predict import predict
    from numerflow.stages.prepare import prepare
    from numerflow.stages.submit import submit
    from numerflow.synthetic import write_synthetic
    from numerflow.stages.train import train
    from numerflow.stages.validate import validate

    start = time.perf_counter()
    folder = Path(folder)
    claim_folder(folder)
    data_dir, model_path = folder / "data", folder / "models" / "model.pt"
    result = QuickstartResult(folder=folder)

    say("1/7 download --synthetic")
    result.artifacts["dataset"] = write_synthetic(cfg.SyntheticConfig(data_dir=data_dir))
    say("2/7 prepare")
    prepared = prepare(cfg.PrepareConfig(data_dir=data_dir, feature_set="all", aux_targets=["all"], downsample=1))
    result.artifacts["prepared"] = prepared.out_dir
    say("3/7 train")
    trained = train(cfg.TrainConfig(data=prepared.out_dir, out=model_path, device="cpu"))
    result.artifacts["model"] = trained.checkpoint
    say("4/7 validate")
    report_dir = folder / "reports" / "model"
    report = validate(cfg.ValidateConfig(model=trained.checkpoint, data_dir=data_dir, report_dir=report_dir))
    result.artifacts["report"] = report_dir
    result.validation = f"{report}\n{signal_line(report.data)}"
    say("5/7 predict")
    predicted = predict(cfg.PredictConfig(models=[trained.checkpoint], data_dir=data_dir,
                                          out=folder / "predictions" / "model_live.csv"))
    result.artifacts["predictions"] = predicted.out
    say("6/7 submit --dry-run")
    submitted = submit(cfg.SubmitConfig(predictions=predicted.out, model_name="quickstart", data_dir=data_dir,
                                        receipts_dir=folder / "receipts", dry_run=True))
    say(str(submitted))
    say("7/7 compare")
    compared = compare(CompareConfig(models=[report_dir, result.artifacts["dataset"] / "validation_example_preds.parquet"],
                                         data_dir=data_dir, compare_dir=folder / "compare", name="model_vs_example",
                                         device="cpu"))
    result.artifacts["compare"] = compared.folder
    result.comparison = str(compared)
    result.seconds = time.perf_counter() - start
    return result
