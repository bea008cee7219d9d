"""scores: the real numerapi client fetches round scores from the fake Numerai server (numerapi
3.x's submission_scores, and 2.x's round_model_performances_v2); rounds.csv and scores.png per
model; the summary; the in line / below / above verdict on scores planted from a known
distribution; faults as one Error line."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

import numerflow
from numerflow.cli import app
from numerflow.numerai import scores as client_scores
from numerflow.stages.scores import bootstrap_range
from tests.helpers import runner

RESOLVED = range(590, 600)  # ten resolved rounds
RESOLVING = (600, 601)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NUMERFLOW_CONFIG", raising=False)
    return tmp_path


def run(*args):
    return runner.invoke(app, ["scores", *map(str, args)])


def plant_rounds(server, name="fake_model", corr=None, days=3):
    """Ten resolved rounds (CORR 0.01..0.10, MMC half of it, payout 0.1 each) and two resolving
    ones (scored for `days` days so far); `corr`: the resolved rounds' CORR values instead."""
    model_id = server.models[name]
    corr = list(corr) if corr is not None else [0.01 * (i + 1) for i in range(len(RESOLVED))]
    for number, value in zip(range(590, 590 + len(corr)), corr):
        server.live.add_round(model_id, number, {"v2_corr20": value, "mmc": value / 2, "bmc": 0.001},
                              resolved=True, payout=0.1, days=days)
    for number in RESOLVING:
        server.live.add_round(model_id, number, {"v2_corr20": -0.05, "mmc": 0.0}, resolved=False, day=5,
                              payout=-0.2, days=days)
    return corr


def plant_report(folder, values):
    """A validation report whose per-era CORR are `values`."""
    folder.mkdir(parents=True)
    per_era = [{"era": f"{i:04d}", "rows": 100, "numerai_corr": v} for i, v in enumerate(values)]
    (folder / "report.json").write_text(json.dumps({"source": "models/a.pt", "data": "v.parquet",
                                                    "per_era": per_era}))
    return folder


def test_resolved_and_resolving_rounds(workdir, fake_numerai):
    corr = plant_rounds(fake_numerai)
    result = run("--model-name", "fake_model")
    assert result.exit_code == 0, result.output
    assert "fake_model: 12 rounds (10 resolved, 2 resolving)" in result.output
    assert f"CORR  mean {np.mean(corr):.4f}  sharpe {np.mean(corr) / np.std(corr):.2f}" in result.output
    assert "payout 1.0000 settled, -0.4000 pending" in result.output
    assert "BMC   mean 0.0010  sharpe nan" in result.output  # a constant series has no Sharpe (issue 27)
    assert "no validation report known" in result.output
    rows = pd.read_csv(workdir / "scores" / "fake_model" / "rounds.csv")
    scored = rows[rows["metric"] != "payout"]
    # one row per round, metric and scoring day, as Numerai reported it
    assert len(scored) == 10 * 3 * 3 + 2 * 2 * 3
    assert set(scored.loc[scored["resolved"], "round"]) == set(RESOLVED)
    assert set(scored.loc[~scored["resolved"], "round"]) == set(RESOLVING)
    assert (workdir / "scores" / "fake_model" / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_old_clients_round_model_performances_give_the_same_rounds(workdir, fake_numerai, monkeypatch):
    plant_rounds(fake_numerai)
    new = numerflow.scores(model_names=["fake_model"])
    monkeypatch.setattr(client_scores, "has_submission_scores", lambda api: False)  # numerapi 2.19 - 2.x
    old = numerflow.scores(model_names=["fake_model"])
    assert "submissionScores" in fake_numerai.ops()
    assert "v2RoundModelPerformances" in fake_numerai.ops()

    def finals(frame):
        scored = frame[frame["metric"] != "payout"].sort_values(["round", "metric", "day"])
        return scored.groupby(["round", "metric"])[["value", "resolved"]].last()

    pd.testing.assert_frame_equal(finals(new.frame), finals(old.frame))
    assert str(new).replace("\n", " ").split("Written")[0] == str(old).replace("\n", " ").split("Written")[0]


def test_model_without_rounds_is_one_plain_line(workdir, fake_numerai):
    result = run("--model-name", "fake_model")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "fake_model: no rounds scored yet"
    assert not (workdir / "scores").exists()


def test_every_model_of_numerflow_toml(workdir, fake_numerai):
    plant_rounds(fake_numerai, "fake_model")
    plant_rounds(fake_numerai, "other_model")
    (workdir / "numerflow.toml").write_text('[models.fake_model]\nmodel = "models/a.pt"\n\n'
                                            '[models.other_model]\nmodels = ["models/a.pt", "models/b.pt"]\n')
    rng = np.random.default_rng(0)
    plant_report(workdir / "reports" / "a", rng.normal(0.05, 0.03, 300))
    result = run()
    assert result.exit_code == 0, result.output
    assert "fake_model: 12 rounds" in result.output and "other_model: 12 rounds" in result.output
    assert ("live against validation: in line (live CORR mean 0.0550 over 10 resolved rounds; validation "
            "reports/a: per-era mean") in result.output
    assert "other_model" in result.output.split("no validation report known")[0]
    assert {p.name for p in (workdir / "scores").iterdir()} == {"fake_model", "other_model"}


@pytest.mark.parametrize("live_mean, word", [(0.02, "in line"), (-0.02, "below"), (0.06, "above")])
def test_verdict_on_scores_planted_from_a_known_distribution(workdir, fake_numerai, live_mean, word):
    rng = np.random.default_rng(7)
    plant_report(workdir / "reports" / "mine", rng.normal(0.02, 0.02, 400))  # validation: N(0.02, 0.02) per era
    live = rng.normal(live_mean, 0.02, 20)
    plant_rounds(fake_numerai, corr=live, days=1)
    result = numerflow.scores(model_names=["fake_model"], report="reports/mine")
    verdict = result.models[0].verdict
    assert verdict.word == word
    assert verdict.rounds == 20 and verdict.live_mean == pytest.approx(live.mean())
    assert verdict.low < 0.02 < verdict.high


def test_block_bootstrap_range_holds_the_mean_of_draws_from_the_same_distribution():
    rng = np.random.default_rng(1)
    validation = rng.normal(0.02, 0.02, 500)
    low, high = bootstrap_range(validation, 20)
    means = rng.normal(0.02, 0.02, (2000, 20)).mean(axis=1)
    inside = np.mean((means >= low) & (means <= high))
    assert 0.8 < inside <= 1.0
    # blocks widen the range when neighbouring eras move together
    smooth = np.convolve(rng.normal(0.02, 0.02, 503), np.ones(4) / 4, mode="valid")
    b_low, b_high = bootstrap_range(smooth, 20)
    i_low, i_high = bootstrap_range(smooth, 20, block=1)
    assert b_high - b_low > 1.3 * (i_high - i_low)


def test_unknown_model_and_missing_credentials(workdir, fake_numerai, monkeypatch, caplog, assert_secret_absent):
    caplog.set_level(logging.DEBUG)
    plant_rounds(fake_numerai)
    unknown = run("--model-name", "fake_model", "--model-name", "nope")
    assert unknown.exit_code == 1
    assert unknown.output.strip() == ("Error: unknown model name(s): nope (this account's models: fake_model, "
                                      "other_model)")
    assert not (workdir / "scores").exists()
    monkeypatch.delenv("NUMERAI_SECRET_KEY")
    missing = run("--model-name", "fake_model")
    assert missing.exit_code == 1
    assert missing.output.startswith("Error: Numerai credentials missing (NUMERAI_SECRET_KEY)")
    assert_secret_absent([unknown, missing], caplog.text, workdir)


def test_no_models_named_anywhere(workdir, fake_numerai):
    result = run()
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: no models to fetch: pass --model-name or add [models.<name>] tables "
                                     "to numerflow.toml")


def test_5xx_while_fetching_is_retried(workdir, fake_numerai):
    plant_rounds(fake_numerai)
    fake_numerai.fail("submissionScores", times=2, status=503)
    result = run("--model-name", "fake_model")
    assert result.exit_code == 0, result.output
    assert "12 rounds" in result.output
