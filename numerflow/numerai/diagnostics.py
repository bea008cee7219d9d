"""Numerai's hosted diagnostics: upload validation predictions, then ask for the run's result.

The upload is numerapi's upload_diagnostics in the same three steps (diagnosticsUploadAuth,
PUT, createDiagnostics) with the PUT's status checked and transient failures retried, as
submissions' uploads are; the result is numerapi's own `diagnostics` query, sent through
numerflow's transport, so a 5xx or a dropped connection while polling is retried like any call."""

from __future__ import annotations

import os
from pathlib import Path

from numerapi import NumerAPI

from numerflow.errors import ApiError
from numerflow.numerai.submissions import _put
from numerflow.numerai.transport import require_token, unexpected_answer, with_retries

# same mutation numerapi's upload_diagnostics sends (2.19 to 3.x)
CREATE_DIAGNOSTICS_QUERY = """
    mutation($filename: String!
             $tournament: Int!
             $modelId: String) {
        createDiagnostics(filename: $filename
                          tournament: $tournament
                          modelId: $modelId) {
            id
        }
    }"""

DONE = "done"
FAILED = ("failed", "error", "errored")


def upload_diagnostics(api: NumerAPI, path: str | os.PathLike, model_id: str) -> str:
    """Upload an id,prediction CSV of the validation rows for `model_id`'s diagnostics; returns
    the diagnostics id to poll."""
    require_token(api)
    path = Path(path)
    data = path.read_bytes()
    try:
        slot = api._upload_auth("diagnosticsUploadAuth", str(path), api.tournament_id, model_id)
        with_retries(f"upload of {path.name}", lambda: _put(slot["url"], data, path.name))
        result = api.raw_query(CREATE_DIAGNOSTICS_QUERY, {
            "filename": slot["filename"], "tournament": api.tournament_id, "modelId": model_id},
            authorization=True)
        return str(result["data"]["createDiagnostics"]["id"])
    except (KeyError, TypeError, IndexError) as exc:
        raise unexpected_answer("createDiagnostics", exc) from None


def diagnostics_result(api: NumerAPI, model_id: str, diagnostics_id: str) -> dict:
    """Numerai's answer for one diagnostics run (numerapi's `diagnostics`): a dict holding
    `status` and, once done, the summary and `perEraDiagnostics`."""
    require_token(api)
    try:
        answer = api.diagnostics(model_id, diagnostics_id)
    except (KeyError, TypeError, IndexError) as exc:
        raise unexpected_answer("diagnostics", exc) from None
    if isinstance(answer, list):  # numerapi answers a list whose first item is the run
        answer = answer[0] if answer else None
    if not isinstance(answer, dict) or "status" not in answer:
        raise ApiError(f"Numerai API call 'diagnostics' gave no status for run {diagnostics_id}")
    return answer


def run_state(answer: dict) -> str:
    """'done', 'failed' or 'running' (any other status Numerai reports while it works)."""
    status = str(answer.get("status") or "").lower()
    if status == DONE:
        return DONE
    return "failed" if status in FAILED else "running"
