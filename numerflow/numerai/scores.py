"""A model's live round scores, as Numerai reports them, in one shape whatever numerapi is installed.

numerapi 3.x has `submission_scores` (GraphQL `submissionScores`: one row per round, metric and
scoring day); numerapi 2.19 to 2.x has only `round_model_performances_v2` (`v2RoundModelPerformances`:
one entry per round with its scores of the latest day), which 3.x still has but marks deprecated.
Scores come from the first when the client has it, else from the second. Payouts are reported
only by the second (payoutSettled, or payoutPending while the round resolves): it is asked for
them on every client, and when Numerai refuses it the payouts are left out."""

from __future__ import annotations

import datetime as dt
import functools
import warnings

from numerapi import NumerAPI

from numerflow.errors import ApiError
from numerflow.numerai.transport import GraphQLError, unexpected_answer

# one row per round and metric (and scoring day where Numerai gives one)
COLUMNS = ["round", "metric", "value", "percentile", "day", "date", "resolved", "payout"]
PAYOUT = "payout"  # the metric name payout rows carry in rounds.csv


def has_submission_scores(api: NumerAPI) -> bool:
    return hasattr(api, "submission_scores")


def round_scores(api: NumerAPI, model_id: str, last_n_rounds: int | None = None) -> list[dict]:
    """Rows of COLUMNS (payout None) from submission_scores when the client has it, else from
    round_model_performances_v2; plus one `payout` row per round where Numerai reports one."""
    if has_submission_scores(api):
        rows = _from_submission_scores(api, model_id, last_n_rounds)
        performances = _performances(api, model_id, required=False)
    else:
        performances = _performances(api, model_id, required=True)
        rows = _score_rows(performances or [])
    rows += _payout_rows(performances or [], {r["round"]: r["resolved"] for r in rows})
    if last_n_rounds:
        keep = set(sorted({r["round"] for r in rows})[-last_n_rounds:])
        rows = [r for r in rows if r["round"] in keep]
    return rows


def _from_submission_scores(api: NumerAPI, model_id: str, last_n_rounds: int | None) -> list[dict]:
    try:
        answer = api.submission_scores(model_id, last_n_rounds=last_n_rounds)
        return [{"round": int(s["roundNumber"]), "metric": str(s["displayName"]), "value": _number(s.get("value")),
                 "percentile": _number(s.get("percentile")), "day": s.get("day"), "date": _text(s.get("date")),
                 "resolved": bool(s.get("resolved")), "payout": None} for s in answer or []]
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        if isinstance(exc, ApiError):
            raise
        raise unexpected_answer("submissionScores", exc) from None


def _performances(api: NumerAPI, model_id: str, required: bool) -> list[dict] | None:
    """round_model_performances_v2's answer; None when not `required` and Numerai refuses it."""
    try:
        with warnings.catch_warnings():  # deprecated in numerapi 3.x: asked here for payouts only
            warnings.simplefilter("ignore", DeprecationWarning)
            return list(api.round_model_performances_v2(model_id) or [])
    except GraphQLError:
        if required:
            raise
        return None
    except (KeyError, TypeError, IndexError, ValueError) as exc:  # ValueError: numerapi's date parsing
        if isinstance(exc, ApiError):
            raise
        raise unexpected_answer("v2RoundModelPerformances", exc) from None


def _read_performances(read):
    """`read` of round_model_performances_v2's answer, a wrong type or missing field in it (a null
    round number, a word for a number) one ApiError naming the call, as submission_scores' are."""

    @functools.wraps(read)
    def reading(*args):
        try:
            return read(*args)
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise unexpected_answer("v2RoundModelPerformances", exc) from None

    return reading


@_read_performances
def _score_rows(performances: list[dict]) -> list[dict]:
    rows = []
    for perf in performances:
        for s in perf.get("submissionScores") or []:
            rows.append({"round": int(perf["roundNumber"]), "metric": str(s["displayName"]),
                         "value": _number(s.get("value")), "percentile": _number(s.get("percentile")),
                         "day": s.get("day"), "date": _text(s.get("date")),
                         "resolved": bool(perf.get("roundResolved")), "payout": None})
    return rows


@_read_performances
def _payout_rows(performances: list[dict], resolved_by_round: dict[int, bool]) -> list[dict]:
    """One row per round: the sum of its scores' payoutSettled (resolved) or payoutPending."""
    rows = []
    for perf in performances:
        number = int(perf["roundNumber"])
        resolved = bool(perf.get("roundResolved", resolved_by_round.get(number, False)))
        key = "payoutSettled" if resolved else "payoutPending"
        values = [_number(s.get(key)) for s in perf.get("submissionScores") or []]
        values = [v for v in values if v is not None]
        if values:
            rows.append({"round": number, "metric": PAYOUT, "value": None, "percentile": None, "day": None,
                         "date": None, "resolved": resolved, "payout": float(sum(values))})
    return rows


def _number(value) -> float | None:
    return None if value is None else float(value)


def _text(value) -> str | None:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return None if value is None else str(value)
