"""compare stage: several models side by side on the same rows and eras, scored the way Numerai
pays, with validate's own definitions.

Each argument is one input kind (inputs.py: report folder, cv run, sweep, checkpoint, predictions
file; INPUT_KINDS is where an ensemble folder will be added). The data files are the inputs' own
(or --data), read once (rows.py); every model is placed on those rows and scored only on the rows
every model predicts (a note says what was dropped). Per model and era (scoring.py): CORR, MMC
against the meta model, BMC and the Spearman correlation with the benchmark model, TB200, max
feature exposure and the payout clip(a x CORR + b x MMC, -0.05, 0.05) with sweep's payout weights;
then the pairwise correlation between models, the churn against --churn-against, and the
deflated Sharpe of the best by --sort among all N models compared (scoring.honest_winner). Results:
compare/<name>/{compare.csv, compare.json, per_era.parquet, cumulative.png}, one set (output.py).
"""

from __future__ import annotations

from pathlib import Path


from numerflow import metrics
from numerflow.config_selection import CompareConfig
from numerflow.errors import ConfigError
from numerflow.stages.compare.inputs import INPUT_KINDS, Candidate, id_predictions, load_candidates
from numerflow.provenance import PROVENANCE, make_record, prepared_folder_of
from numerflow.stages.compare.output import COMPARE_JSON, LOWER_IS_BETTER, CompareResult, sort_table, summary_json, write_results
from numerflow.stages.compare.rows import ScoringRows, choose_data
from numerflow.stages.compare.scoring import (COLUMNS, PER_ERA, churn, common_rows, honest_winner, pairwise,
                                              per_era_scores, side_models, table_row)

__all__ = ["COLUMNS", "LOWER_IS_BETTER", "INPUT_KINDS", "Candidate", "CompareResult", "compare"]


def payout_weights(config: CompareConfig) -> dict:
    """--payout over the defaults of sweep's payout objective (sweeps/space.py's [payout] table)."""
    from numerflow.sweeps.space import DEFAULT_PAYOUT

    return {**DEFAULT_PAYOUT, **(config.payout or {})}


def provenance(record_file: Path, candidates: list[Candidate], rows: ScoringRows) -> dict:
    """compare.json's provenance: every checkpoint scored, and the prepared data's fingerprint
    (when the rows are a prepared folder's)."""
    checkpoints = list(dict.fromkeys(path for c in candidates for path in c.checkpoints))
    prepared = {prepared_folder_of(path) for path in rows.paths}
    data = prepared.pop() if len(prepared) == 1 else None
    return make_record(record_file, checkpoints, data, [rows.data.target])


def compare(config: CompareConfig) -> CompareResult:
    """Score every model on the common rows and write compare/<name>/ (nothing is written when an
    input is bad: every check comes before the set is published)."""
    import pandas as pd

    payout = payout_weights(config)
    if config.sort == "churn" and config.churn_against is None:
        raise ConfigError("--sort churn needs --churn-against FILE")
    candidates = load_candidates(config)
    rows = ScoringRows(choose_data(config, candidates), config)
    notes = rows.notes
    predictions = {c.name: c.predict(rows) for c in candidates}
    for candidate in candidates:
        notes += candidate.notes
    common = common_rows(predictions, rows.eras, notes)
    side = side_models(rows, common, notes)
    target, eras = rows.target[common], rows.eras[common]
    groups = metrics.group_eras(eras)
    ids = rows.frame.index[common]
    matrix = rows.matrix[common] if rows.matrix is not None and rows.matrix.shape[1] else None
    on_common = {name: values[common] for name, values in predictions.items()}
    per_era, table = [], []
    for candidate in candidates:
        scores = per_era_scores(on_common[candidate.name], target, groups, ids, matrix, side, payout)
        per_era.append(pd.DataFrame({"era": groups.labels, "model": candidate.name, **scores}))
        table.append(table_row(candidate.name, candidate.source, scores, len(ids), config.last))
    table = pd.DataFrame(table, columns=COLUMNS)
    if config.churn_against is not None:
        other = rows.row_ids.restricted_to(common)
        against = id_predictions(Path(config.churn_against))
        values = other.place(against.index, against.to_numpy(), str(config.churn_against), strict=False)
        table["churn"] = table["model"].map(churn(on_common, values, groups, str(config.churn_against)))
    table = sort_table(table, config.sort)
    per_era = pd.concat(per_era, ignore_index=True)[["era", "model", *PER_ERA]]
    deflated = honest_winner(table, per_era, config.sort, notes)
    last_eras = groups.labels[-config.last:]
    summary = summary_json(
        table, data=[str(p) for p in rows.paths], data_name=rows.data_name, target=rows.data.target,
        rows=int(common.sum()), eras=groups.n_eras, first_era=groups.labels[0], last_era=groups.labels[-1],
        last=config.last, last_eras=[last_eras[0], last_eras[-1]], payout=payout, benchmark=side.benchmark_name,
        meta_model=side.meta is not None, sort=config.sort, churn_against=str(config.churn_against or "") or None,
        pairwise=pairwise(on_common, groups), deflated_sharpe=deflated, notes=notes)
    folder = Path(config.compare_dir) / config.name
    summary[PROVENANCE] = provenance(folder / COMPARE_JSON, candidates, rows)
    result = CompareResult(table=table, per_era=per_era, summary=summary)
    write_results(result, folder)
    return result
