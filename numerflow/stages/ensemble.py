"""ensemble stage: choose an ensemble from cv runs and `sweep --cv` trials by greedy forward
selection with replacement (Caruana et al., ICML 2004) over their out-of-fold predictions, and
with --fit train its members for predict, validate, export and round.

Read top to bottom: read the candidates (a cv run's oof.parquet and report.json, a --cv sweep's
trials/<number>/oof.parquet and settings.json) and check them; take the rows every candidate
predicts in the chosen split (the prepared train file's: out-of-fold; validation only with
--on validation); rank each candidate within eras; run the greedy selection, scoring every step per
era with validate's definitions (numerflow.metrics through sweeps' Objective); with --fit train
each member once on all training eras (or training and validation eras) with its own settings
and its own epoch count, no epoch chosen on any scored era; publish ensemble.json and the
checkpoints as one set. Nothing is written until everything has succeeded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np

from numerflow import metrics, schema
from numerflow.config import EnsembleConfig, TrainConfig
from numerflow.ensembles import ENSEMBLE_JSON, MEMBERS_DIR, greedy_selection
from numerflow.errors import ConfigError, DataError
from numerflow.files import publish_set
from numerflow.options import EnsembleObjective, FitOn, SelectOn
from numerflow.provenance import PROVENANCE, make_record, record_path
from numerflow.sweeps import ray_cluster
from numerflow.workflow.oof_files import OOF_FILE as CV_OOF, REPORT_FILE as CV_REPORT, OofSource, read_oof, read_oof_source



@dataclass
class Candidate:
    source: str  # the folder it came from, as the user named it
    settings: dict  # its train settings (a CvConfig's, as config_dict writes them)
    data: Path  # the prepared folder it was trained on
    target: str
    predictions: object  # pandas Series of its predictions, indexed by id (text)
    targets: list[str] | None = None  # the targets it trained on (None: recorded before they were)

    @property
    def seed(self):
        return self.settings.get("seed")


@dataclass
class SelectionRows:
    """The rows every candidate predicts, in the split selection sees."""
    split_file: Path
    ids: np.ndarray
    eras: metrics.EraGroups
    target: np.ndarray
    meta_model: np.ndarray | None = None
    benchmark: np.ndarray | None = None


@dataclass
class EnsembleResult:
    folder: Path
    record: dict  # ensemble.json's content
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def ensemble_json(self) -> Path:
        return self.folder / ENSEMBLE_JSON

    def __str__(self) -> str:
        r, lines = self.record, []
        sel = r["selection"]
        if r["on"] == SelectOn.validation:
            lines.append("WARNING: chosen on VALIDATION eras (--on validation): scores of this ensemble on those "
                         "eras are no longer held out")
        lines.append(f"Ensemble {self.folder}: {r['size']} greedy step(s) maximising {r['objective']} over "
                     f"{len(r['candidates'])} candidate(s), on {sel['rows']:,} {sel['kind']} rows in {sel['eras']} "
                     f"eras ({sel['first_era']}-{sel['last_era']})")
        lines.append(f"{'step':>4}  {'chose':<40}{r['objective']:>12}")
        lines += [f"{s['step']:>4}  {s['chose']:<40}{s['objective']:>12.5f}"
                  + ("" if s["step"] <= r["kept_steps"] else "  (not kept: added nothing)") for s in r["steps"]]
        best = max(r["candidates"], key=lambda c: c["objective"])
        lines.append(f"Best single candidate: {best['source']} {best['objective']:.5f}; the ensemble (the best "
                     f"{r['kept_steps']} step(s)): {r['ensemble_objective']:.5f}")
        if "neutralize_benchmark" in r:
            tried = ", ".join(f"{p}: {v:.5f}" for p, v in r["neutralize_benchmark_scores"].items())
            lines.append(f"Neutralised to the benchmark: {r['neutralize_benchmark']:g} ({r['objective']} by "
                         f"proportion: {tried}); predict, validate, export and round apply it")
        lines.append("Members: " + ", ".join(f"{m['source']} (weight {m['weight']:g})" for m in r["members"]))
        if r["unused"]:
            lines.append(f"No weight ({len(r['unused'])} candidate(s) not chosen in the kept steps: they add nothing): "
                         + ", ".join(r["unused"][:10]) + (" ..." if len(r["unused"]) > 10 else ""))
        if r["fitted"]:
            lines.append(f"Fitted {len(r['members'])} member(s) on {r['fitted']['eras']} "
                         f"{'training and validation' if r['fitted']['on'] == FitOn.all else 'training'} eras: "
                         f"{self.folder / MEMBERS_DIR}/")
        else:
            lines.append("Not fitted: add --fit to train the members (then predict/validate/export --ensemble)")
        lines += [f"Note: {note}" for note in self.notes]
        lines.append(f"Wrote {self.ensemble_json}")
        return "\n".join(lines)


# --- the candidates ---------------------------------------------------------------------------


def read_candidates(paths: list[Path], notes: list[str] | None = None) -> list[Candidate]:
    """Every candidate the paths name: a cv run, a --cv sweep (its complete trials) or one trial.
    A folder with no out-of-fold predictions is a DataError naming it."""
    from numerflow.sweeps.local import TRIAL_SETTINGS

    candidates = []
    notes = [] if notes is None else notes
    for path in paths:
        path = Path(path)
        if (path / CV_REPORT).is_file() and (path / CV_OOF).is_file():
            candidates.append(_cv_candidate(path, notes))
        elif (path / TRIAL_SETTINGS).is_file():
            candidates.append(_trial_candidate(path, notes))
        elif (path / "sweep.json").is_file():
            candidates += _sweep_candidates(path, notes)
        else:
            raise DataError(f"{path}: no out-of-fold predictions (give a cv run's folder, cv/NAME, or a sweep "
                            f"run with --cv, sweeps/NAME)")
    sources = [c.source for c in candidates]
    repeated = sorted({s for s in sources if sources.count(s) > 1})
    if repeated:
        raise ConfigError(f"candidate(s) given more than once: {', '.join(repeated)}")
    return candidates


def _cv_candidate(folder: Path, notes: list[str]) -> Candidate:
    return _candidate(read_oof_source(folder, CV_REPORT, f"numerflow cv --name {folder.name}"), notes)


def _trial_candidate(folder: Path, notes: list[str]) -> Candidate:
    from numerflow.sweeps.local import TRIAL_SETTINGS

    sweep = folder.parent.parent
    return _candidate(read_oof_source(folder, TRIAL_SETTINGS, f"numerflow sweep --cv --name {sweep.name}"), notes)


def _candidate(source: OofSource, notes: list[str]) -> Candidate:
    notes += source.notes
    return Candidate(str(source.folder), source.settings, source.data, source.target, read_oof(source.oof),
                     source.targets)


def _sweep_candidates(folder: Path, notes: list[str]) -> list[Candidate]:
    """A sweep's complete trials: those with out-of-fold predictions (run with --cv)."""
    from numerflow.sweeps.local import kept_trials

    trials = kept_trials(folder)
    if not trials:
        raise DataError(f"{folder}: a sweep without out-of-fold predictions (run it with --cv: each complete "
                        f"trial then keeps trials/<number>/oof.parquet)")
    return [_trial_candidate(trial, notes) for trial in trials.values()]


# --- the rows selection sees ------------------------------------------------------------------


def selection_rows(candidates: list[Candidate], config: EnsembleConfig, notes: list[str]) -> SelectionRows:
    """The rows of the chosen split (training eras: out-of-fold; or validation) that every
    candidate predicts, in the file's order, with the target (and meta model or benchmark the
    objective needs)."""
    data = {c.data.resolve() for c in candidates}
    targets = {c.target for c in candidates}
    if len(data) > 1 or len(targets) > 1:
        raise DataError("the candidates were trained on different prepared data or targets ("
                        + ", ".join(sorted({f"{c.data} ({c.target})" for c in candidates})) + "): choose among "
                        "models of one data set")
    split_file = candidates[0].data / (schema.TRAIN_FILE if config.on == SelectOn.oof else schema.VALIDATION_FILE)
    target = candidates[0].target
    _, frame = schema.read_matrix(split_file, [], [schema.ERA, target])
    index = frame.index.astype(str)
    ids = index.to_numpy()
    common = np.ones(len(ids), dtype=bool)
    for c in candidates:  # hashed (pandas), not np.isin: that sorts object arrays of ids, minutes at 300k rows
        common &= index.isin(c.predictions.index)
    kind = "out-of-fold training" if config.on == SelectOn.oof else "validation"
    if not common.any():
        raise DataError(f"no common eras: the candidates share no {kind} rows of {split_file}"
                        + (" (cv --include-validation predicts validation eras)" if config.on == SelectOn.validation
                           else ""))
    if not common.all():
        notes.append(f"{int((~common).sum()):,} rows of {split_file.name} are not predicted by every candidate: "
                     f"chosen on the {int(common.sum()):,} that are")
    frame = frame[common]
    rows = SelectionRows(split_file, ids[common], metrics.group_eras(frame[schema.ERA].astype(str).to_numpy()),
                         frame[target].to_numpy(np.float64, na_value=np.nan))
    # Numerai's meta model covers validation eras only: on out-of-fold training eras the payout
    # takes BMC in MMC's place.
    payout_on_oof = config.objective == EnsembleObjective.payout and config.on == SelectOn.oof
    if config.objective == EnsembleObjective.payout and not payout_on_oof:
        rows.meta_model = _meta_model(rows, config)
    if payout_on_oof or config.neutralize_benchmark is not None or \
            config.objective in (EnsembleObjective.bmc_mean, EnsembleObjective.bmc_last):
        rows.benchmark = _benchmark(rows, config, notes)
    if payout_on_oof:
        notes.append("payout on out-of-fold training eras, which have no meta model (Numerai publishes it for "
                     "validation only): BMC stands in for MMC (CORR x 0.5 + BMC x 2 per era)")
    return rows


def _meta_model(rows: SelectionRows, config: EnsembleConfig) -> np.ndarray:
    from numerflow.scoring.side_files import meta_model_on_rows

    values = meta_model_on_rows(rows.split_file, rows.ids)
    if values is None or not np.isfinite(values).any():
        raise DataError(f"--objective payout needs the meta model on the selection rows; none found for "
                        f"{rows.split_file} (Numerai's meta model covers validation eras only): choose "
                        f"corr_mean, corr_sharpe or bmc_mean")
    return values


def _benchmark(rows: SelectionRows, config: EnsembleConfig, notes: list[str]) -> np.ndarray:
    """The benchmark on the selection rows: the prepared file's `benchmark` column joined by id
    (what prepare carried), else the version folder's benchmark models file."""
    from numerflow.scoring.ids import RowIds
    from numerflow.scoring.side_files import prepared_manifest_beside, read_benchmark, read_side_column, version_folder
    from numerflow.workflow.benchmark_rows import PREPARED_COLUMN

    path = rows.split_file
    if config.benchmark is None and PREPARED_COLUMN in schema.parquet_columns(path):
        values = read_side_column(path, PREPARED_COLUMN, RowIds(rows.ids, path))
        covered = int(np.isfinite(values).sum())
        if covered:
            notes.append(f"BMC against {path.name}'s '{PREPARED_COLUMN}' column ({covered:,} of {len(values):,} "
                         f"selection rows have a value; the others are left out of BMC)")
            return values
    source = version_folder(path, schema.parquet_columns(path), prepared_manifest_beside(path), Path("data"))
    file = schema.TRAIN_BENCHMARK_FILE if config.on == SelectOn.oof else schema.VALIDATION_BENCHMARK_FILE
    found = read_benchmark(source, config.benchmark, RowIds(rows.ids, path), path, notes, file=file) \
        if source is not None else None
    if found is None:
        raise DataError(f"--objective {config.objective}: no benchmark model for the selection rows ({file} in "
                        f"{source or 'the source data folder'})")
    notes.append(f"BMC against {found[0]} ({file})")
    return found[1]


# --- selection ----------------------------------------------------------------------------------


def scorer(config: EnsembleConfig, rows: SelectionRows) -> Callable[[np.ndarray], float]:
    """The objective of predictions on the selection rows, per era with validate's definitions."""
    from numerflow.sweeps.objective import Objective

    objective = Objective(config.objective, last=config.last)
    return lambda values: objective.scores(values, rows.target, rows.eras, rows.meta_model,
                                           rows.benchmark)["objective"]


def selection_record(config: EnsembleConfig, candidates: list[Candidate], rows: SelectionRows) -> dict:
    ranks = np.vstack([metrics.rank_within_eras(c.predictions.reindex(rows.ids).to_numpy(np.float64), rows.eras)
                       for c in candidates])
    score = scorer(config, rows)
    counts, steps, kept = greedy_selection(ranks, config.size, score)
    chosen = [k for k in range(len(candidates)) if counts[k] > 0]
    members = [{"source": candidates[k].source, "seed": candidates[k].seed, "count": int(counts[k]),
                "weight": counts[k] / kept, "settings": candidates[k].settings, "targets": candidates[k].targets,
                "checkpoint": None}
               for k in chosen]
    return {"name": config.name, "objective": config.objective, "on": config.on, "size": config.size,
            "selection": {"kind": "out-of-fold training" if config.on == SelectOn.oof else "validation",
                          "file": str(rows.split_file), "rows": int(len(rows.ids)), "eras": rows.eras.n_eras,
                          "first_era": rows.eras.labels[0], "last_era": rows.eras.labels[-1]},
            "candidates": [{"source": c.source, "seed": c.seed, "objective": score(ranks[k])}
                           for k, c in enumerate(candidates)],
            "steps": [{"step": i, "chose": candidates[s.chose].source, "objective": s.objective}
                      for i, s in enumerate(steps, start=1)],
            "kept_steps": kept, "ensemble_objective": steps[kept - 1].objective,
            "members": members, "weights": [m["weight"] for m in members],
            "unused": [c.source for k, c in enumerate(candidates) if counts[k] == 0],
            "data": str(candidates[0].data), "target": candidates[0].target, "fitted": None,
            **chosen_proportion(config, rows, ranks, counts / kept, score)}


PROPORTION_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


def chosen_proportion(config: EnsembleConfig, rows: SelectionRows, ranks: np.ndarray, weights: np.ndarray,
                      score: Callable[[np.ndarray], float]) -> dict:
    """--neutralize-benchmark: the proportion stored in ensemble.json. auto: each of the grid's
    applied to the kept ensemble (workflow.benchmark_rows, as predict applies it) and scored by the
    objective on the selection eras; the best wins (the smaller of equals)."""
    from numerflow.workflow.benchmark_rows import neutralise_ranks

    if config.neutralize_benchmark is None:
        return {}
    combined = metrics.rank_within_eras(weights @ ranks, rows.eras)
    grid = PROPORTION_GRID if str(config.neutralize_benchmark).strip().lower() == "auto" \
        else (float(config.neutralize_benchmark),)
    scores = {p: score(neutralise_ranks(combined, rows.benchmark, rows.eras.codes, p, "")[0]) for p in grid}
    best = max(grid, key=lambda p: (scores[p], -p))
    return {"neutralize_benchmark": best, "neutralize_benchmark_scores": {f"{p:g}": scores[p] for p in grid}}


# --- fitting ------------------------------------------------------------------------------------


def member_config(settings: dict, data: Path, device: str, targets: list[str] | None = None) -> TrainConfig:
    """A member's TrainConfig: its own settings (epochs, seed, ...) and the targets its cv run or
    trial trained on (when recorded), no patience (nothing is scored while it trains), on this
    machine's device."""
    names = {f.name for f in fields(TrainConfig)}
    own = {k: v for k, v in settings.items() if k in names and k not in ("data", "out", "resume", "device")}
    recorded = {"targets": list(targets)} if targets else {}
    return TrainConfig(**{**own, **recorded, "patience": None, "data": data, "device": device})


def member_targets(source: str, recorded: list[str] | None, prepared: Path, notes: list[str]) -> list[str]:
    """The targets a member trains on: those its cv run or trial recorded, each of which the
    prepared data must hold (refused otherwise, never a different recipe)."""
    available = schema.read_prepared_manifest(prepared).get("targets") or []
    if not recorded:
        notes.append(f"{source} was written before its targets were recorded: trained on the targets its settings "
                     f"choose from {prepared} ({', '.join(available)})")
        return []
    lacking = [t for t in recorded if t not in available]
    if lacking:
        raise DataError(f"{source} trained on target(s) {', '.join(recorded)}; {prepared} lacks "
                        f"{', '.join(lacking)}: prepare them (`numerflow prepare --aux-targets "
                        f"{','.join(lacking)}`) or rerun it on this data")
    return list(recorded)


def fit_split(data, targets: list[str], fit_on: str):
    """The rows members train on: every training era, plus every validation era with --fit-on all."""
    from numerflow.sweeps.trial import train_split_with
    from numerflow.training.data import Split

    train = train_split_with(data, targets)
    if fit_on != FitOn.all:
        return train
    validation = data.validation
    columns = [data.targets.index(t) for t in targets]
    eras = schema.sorted_eras([*train.eras, *validation.eras])
    code = {era: i for i, era in enumerate(eras)}
    remap = lambda split: np.array([code[e] for e in split.eras], dtype=np.int32)[split.era_codes]  # noqa: E731
    return Split(np.concatenate([train.features, validation.features]),
                 np.concatenate([train.targets, validation.targets[:, columns].astype(train.targets.dtype)]),
                 np.concatenate([remap(train), remap(validation)]), eras)


def fit_members(record: dict, prepared: Path, config: EnsembleConfig, cluster, say) -> list[dict]:
    """Each member trained once on the fit split, with its recorded targets: its checkpoint dicts, in
    members' order. Here one after another, or with --ray each member a Ray task (one worker process
    each) that reads the prepared data itself from the path every node sees."""
    members = record["members"]
    recorded = [member_targets(m["source"], m.get("targets"), prepared, []) for m in members]
    if cluster is None:
        fitted = [fit_member(member, str(prepared), recorded[i - 1], config.device, config.fit_on,
                             say=lambda line, i=i: say(f"member {i}/{len(members)} {line}"))
                  for i, member in enumerate(members, start=1)]
    else:
        say(f"Fitting {len(members)} member(s) as Ray tasks ({config.cpus_per_task:g} CPU, "
            f"{config.gpus_per_task:g} GPU each)")
        data = str(Path(prepared).resolve())
        units = [(f"member {i} ({member['source']})", (member, data, recorded[i - 1], config.device, config.fit_on))
                 for i, member in enumerate(members, start=1)]
        fitted = [None] * len(members)
        for index, result in ray_cluster.run_tasks(cluster, fit_member, units, config.cpus_per_task,
                                                   config.gpus_per_task):
            fitted[index] = result
            say(f"member {index + 1}/{len(members)} ({members[index]['source']}): fitted")
    record["fitted"] = fitted[-1][1] if fitted else None
    return [checkpoint for checkpoint, _ in fitted]


def fit_member(member: dict, data_path: str, targets, device: str, fit_on: str, say=None) -> tuple[dict, dict]:
    """One member trained on the fit split with its recorded targets: (its checkpoint dict, the eras
    it trained on)."""
    from numerflow.sweeps.trial import load_prepared
    from numerflow.training.data import choose_targets
    from numerflow.training.fit import train_arrays

    data = load_prepared(data_path)  # read once per process: here, or per Ray worker
    train_config = member_config(member["settings"], Path(data_path), device, targets)
    targets = choose_targets(train_config, data.manifest, data.path / schema.PREPARED_MANIFEST_FILE)
    split = fit_split(data, targets, fit_on)
    (say or (lambda line: None))(f"({member['source']}): {train_config.epochs} epoch(s) on {len(split.eras)} eras")
    fit = train_arrays(train_config, split, data.features, targets, say=say)
    fitted = {"on": fit_on, "eras": len(split.eras), "first_era": split.eras[0], "last_era": split.eras[-1]}
    return fit.checkpoint(train_config, data.manifest), fitted


# --- the stage ----------------------------------------------------------------------------------


def ensemble_folder(config: EnsembleConfig) -> Path:
    folder = Path(config.ensembles_dir) / config.name
    if folder.exists() and not config.force:
        raise ConfigError(f"{folder} exists: choose another --name, or --force to replace it")
    return folder


def ensemble(config: EnsembleConfig, say: Callable[[str], None] | None = None) -> EnsembleResult:
    """Choose (and with config.fit train) the ensemble; publish ensembles/<name>/."""
    from numerflow.checkpoint import save_checkpoint

    say = say or (lambda line: None)
    started = time.perf_counter()
    if not config.candidates:
        raise ConfigError("give at least one candidate: a cv run (cv/NAME) or a sweep run with --cv (sweeps/NAME)")
    folder = ensemble_folder(config)
    # an unreachable --ray address is an error before anything is read or written
    cluster = ray_cluster.connect(config.ray) if config.fit and config.ray else None
    notes: list[str] = []
    candidates = read_candidates(config.candidates, notes)
    if config.fit:  # before anything slow: every candidate's recorded targets are prepared
        for c in candidates:
            member_targets(c.source, c.targets, c.data, notes)
    rows = selection_rows(candidates, config, notes)
    if config.on == SelectOn.validation:
        say("WARNING: choosing on VALIDATION eras (--on validation): validation no longer measures this ensemble")
    say(f"Choosing among {len(candidates)} candidate(s) on {len(rows.ids):,} rows in {rows.eras.n_eras} eras")
    record = selection_record(config, candidates, rows)
    prepared = candidates[0].data
    checkpoints = fit_members(record, prepared, config, cluster, say) if config.fit else []
    for k, member in enumerate(record["members"]):
        member["checkpoint"] = f"{MEMBERS_DIR}/{k}.pt" if checkpoints else None
    # paths relative to ensemble.json (a moved project still works); the data's fingerprint
    record_file = folder / ENSEMBLE_JSON
    record["data"] = record_path(prepared, record_file)
    record["selection"]["file"] = record_path(rows.split_file, record_file)
    record[PROVENANCE] = make_record(record_file, data=prepared, targets=candidates[0].targets)
    record["notes"] = notes
    with publish_set(folder, ENSEMBLE_JSON, record) as files:
        for member, checkpoint in zip(record["members"], checkpoints):
            save_checkpoint(files.path(member["checkpoint"]), checkpoint)
    if config.force:
        _remove_stale_members(folder, record)
    return EnsembleResult(folder, schema.read_json(folder / ENSEMBLE_JSON), time.perf_counter() - started, notes)


def _remove_stale_members(folder: Path, record: dict) -> None:
    """A replaced ensemble's checkpoints that the new one does not name."""
    kept = {m["checkpoint"] for m in record["members"]}
    for path in (folder / MEMBERS_DIR).glob("*.pt"):
        if f"{MEMBERS_DIR}/{path.name}" not in kept:
            path.unlink()
