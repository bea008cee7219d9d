"""The fake Numerai server's diagnostics runs and live round scores (tests/fake_numerai.py holds the
server; its resolver hands these operations here).

    fake_numerai.live.delay = 0.05                   # runs report "running" for 50 ms, then their end
    fake_numerai.live.fail_with = "Invalid ids"       # runs end "failed" with this message
    fake_numerai.live.summary["validationCorrMean"] = 0.021   # what a done run reports
    fake_numerai.live.add_round("fake_model", 590, {"v2_corr20": 0.02, "mmc": 0.01}, resolved=True, payout=0.3)
    fake_numerai.live.damage = {"updatedAt": "not a date"}  # fields replaced in every answer's items

Operations: diagnosticsUploadAuth and createDiagnostics (numerapi's upload_diagnostics; the PUT
lands in the server's uploads as submissions' do), diagnostics (numerapi's `diagnostics`: a
list holding the run), submissionScores (numerapi 3.x's submission_scores: one row per round,
metric and day, filtered by lastNRounds / displayName / resolved / distinctOnRound) and
v2RoundModelPerformances (numerapi 2.19+'s round_model_performances_v2: one entry per round,
its metrics' latest day, payouts and multipliers; answers both 2.x's and 3.x's field lists).
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass, field

OPS = {"diagnosticsUploadAuth", "createDiagnostics", "diagnostics", "submissionScores", "v2RoundModelPerformances"}
AUTH_OPS = {"diagnosticsUploadAuth", "createDiagnostics", "diagnostics"}


def default_summary() -> dict:
    """A done run's summary, Numerai's field names (numerapi 3.1.1's diagnostics query)."""
    return {"validationCorrMean": 0.0125, "validationCorrStd": 0.0150, "validationCorrSharpe": 0.83,
            "validationMaxDrawdown": -0.031, "validationMmcMean": 0.0051, "validationMmcStd": 0.009,
            "validationMmcSharpe": 0.57, "validationBmcMean": 0.0032, "validationFeatureNeutralCorrMean": 0.008,
            "examplePredsCorrMean": 0.41, "validationFeatureCorrMax": 0.12, "validationCorrMeanRating": 0.62,
            "validationMmcMeanRating": 0.55, "validationCorrSharpeRating": 0.6, "erasAcceptedCount": 2,
            "trainedOnVal": False}


@dataclass
class LiveState:
    delay: float = 0.0  # seconds a diagnostics run reports "running"
    fail_with: str | None = None  # runs end "failed" with this message
    summary: dict = field(default_factory=default_summary)
    runs: dict = field(default_factory=dict)  # id -> {"modelId", "filename", "body", "created"}
    scores: list = field(default_factory=list)  # submissionScores rows (+ "modelId", payouts)
    multipliers: dict = field(default_factory=lambda: {"v2_corr20": 0.5, "mmc": 2.0})
    # A damaged answer: these fields replace those of a done diagnostics run and of every score
    # row and round entry that has them, e.g. {"date": "not a date"}, {"roundNumber": None}.
    damage: dict = field(default_factory=dict)

    def add_round(self, model_id: str, round_number: int, values: dict, resolved: bool, day: int = 20,
                  payout: float | None = None, days: int = 1) -> None:
        """Scores of one round: `values` {metric: value} on its last `days` scoring days (the last one
        is `day`; earlier days hold the values halved, as a round's score moves while it resolves);
        `payout` rides on the first metric's rows, as a settled or pending payout."""
        for d in range(day - days + 1, day + 1):
            date = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(days=round_number + d)
            for i, (metric, value) in enumerate(values.items()):
                final = d == day
                self.scores.append({
                    "modelId": model_id, "roundNumber": round_number, "roundId": f"round-{round_number}",
                    "submissionId": f"sub-{round_number}", "displayName": metric, "version": "1",
                    "value": value if final else value / 2, "percentile": 0.5, "day": d, "resolved": resolved,
                    "date": date.strftime("%Y-%m-%dT%H:%M:%SZ"), "resolveDate": None, "roundResolveTime": None,
                    "roundScoreTime": None, "roundCloseStakingTime": None,
                    "payout": payout if (i == 0 and final) else None})


def resolve(server, op: str, v: dict):
    """The answer to `op` (one of OPS); ValueError(message) for a GraphQL error."""
    live: LiveState = server.live
    if op == "diagnosticsUploadAuth":
        if v.get("modelId") not in server.models.values():
            raise ValueError("Model not found")
        token = uuid.uuid4().hex
        filename = f"{token}/{v.get('filename')}"
        server.upload_slots[token] = filename
        return {"filename": filename, "url": f"{server.url}/upload/{token}"}
    if op == "createDiagnostics":
        body = server.uploads.get(v.get("filename"))
        if body is None:
            raise ValueError("Diagnostics file not uploaded")
        run_id = str(uuid.uuid4())
        live.runs[run_id] = {"modelId": v.get("modelId"), "filename": v["filename"], "body": body,
                             "created": time.monotonic()}
        return {"id": run_id}
    answer = _answer(server, live, op, v)
    if not live.damage:
        return answer
    return [_damaged(item, live.damage) for item in answer] if isinstance(answer, list) else answer


def _damaged(item, damage: dict):
    if not isinstance(item, dict):
        return item
    item = {**item, **{k: v for k, v in damage.items() if k in item}}  # only fields the item has
    if isinstance(item.get("submissionScores"), list):
        item["submissionScores"] = [_damaged(s, damage) for s in item["submissionScores"]]
    return item


def _answer(server, live: LiveState, op: str, v: dict):
    if op == "diagnostics":
        run = live.runs.get(v.get("id"))
        if run is None or run["modelId"] != v.get("modelId"):
            raise ValueError("Diagnostics not found")
        if time.monotonic() - run["created"] < live.delay:
            return [{"status": "running", "message": None, "perEraDiagnostics": []}]
        if live.fail_with is not None:
            return [{"status": "failed", "message": live.fail_with, "perEraDiagnostics": []}]
        return [dict(live.summary, status="done", message=None, updatedAt="2026-01-01T00:00:00Z",
                     perEraDiagnostics=[{"era": 1, "validationCorr": live.summary.get("validationCorrMean")}])]
    rows = [r for r in live.scores if r["modelId"] == v.get("modelId")]
    if op == "submissionScores":
        return _submission_scores(rows, v)
    return _performances(rows, live.multipliers)


def _submission_scores(rows: list[dict], v: dict) -> list[dict]:
    if v.get("displayName") is not None:
        rows = [r for r in rows if r["displayName"] == v["displayName"]]
    if v.get("resolved") is not None:
        rows = [r for r in rows if r["resolved"] == v["resolved"]]
    if v.get("lastNRounds"):
        keep = set(sorted({r["roundNumber"] for r in rows})[-v["lastNRounds"]:])
        rows = [r for r in rows if r["roundNumber"] in keep]
    if v.get("distinctOnRound"):
        latest = {}
        for r in rows:
            if r["roundNumber"] not in latest or r["day"] >= latest[r["roundNumber"]]["day"]:
                latest[r["roundNumber"]] = r
        rows = list(latest.values())
    return [{k: val for k, val in r.items() if k not in ("modelId", "payout")} for r in rows]


def _performances(rows: list[dict], multipliers: dict) -> list[dict]:
    by_round: dict[int, dict[str, dict]] = {}
    for r in rows:  # each metric's latest day
        metrics = by_round.setdefault(r["roundNumber"], {})
        if r["displayName"] not in metrics or r["day"] >= metrics[r["displayName"]]["day"]:
            metrics[r["displayName"]] = r
    answer = []
    for number in sorted(by_round, reverse=True):
        metrics = by_round[number]
        resolved = any(r["resolved"] for r in metrics.values())
        scores = [{"date": r["date"], "day": r["day"], "displayName": r["displayName"], "percentile": r["percentile"],
                   "value": r["value"],
                   "payoutSettled": str(r["payout"]) if resolved and r["payout"] is not None else None,
                   "payoutPending": str(r["payout"]) if not resolved and r["payout"] is not None else None}
                  for r in metrics.values()]
        answer.append({"atRisk": "10.0", "corrMultiplier": multipliers.get("v2_corr20"),
                       "tcMultiplier": 0.0, "roundPayoutFactor": "1.0", "roundNumber": number,
                       "roundOpenTime": "2026-01-01T00:00:00Z", "roundResolveTime": "2026-02-01T00:00:00Z",
                       "roundResolved": resolved, "roundTarget": "target_ender_20",
                       "payoutMultipliers": [{"id": f"m-{name}", "scoreConfigId": name, "name": name, "version": "1",
                                              "displayName": name, "multiplier": m}
                                             for name, m in multipliers.items()],
                       "submissionScores": scores})
    return answer
