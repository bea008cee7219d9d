"""Rounds, the account's models, and uploads: predictions (submit) and hosted model pickles
(export --upload). Each upload is numerapi's three steps (upload slot, PUT, create mutation)
with the PUT's status checked and transient failures retried."""

from __future__ import annotations

import os
from pathlib import Path

import requests
from numerapi import NumerAPI

from numerflow.errors import ApiError
# transport.TIMEOUT is read at each call: one setting for every request (tests shorten it there)
from numerflow.numerai import transport
from numerflow.numerai.transport import (raise_for_retryable, request_failure, require_token, unexpected_answer,
                                         with_retries)

# --- rounds -------------------------------------------------------------------------------------

def current_round(api: NumerAPI) -> int:
    """The number of the newest round."""
    try:
        number = api.get_current_round()
    except (KeyError, TypeError, IndexError) as exc:
        raise unexpected_answer("rounds", exc) from None
    if number is None:
        raise ApiError("Numerai reports no current round")
    return int(number)


def round_is_open(api: NumerAPI) -> bool:
    """True while the current round accepts submissions (openTime < now < closeStakingTime)."""
    try:
        return bool(api.check_round_open())
    except (KeyError, TypeError, IndexError) as exc:
        raise unexpected_answer("rounds", exc) from None


# --- models and submissions ---------------------------------------------------------------------

def model_ids(api: NumerAPI) -> dict[str, str]:
    """{model name: model id} of the account's Classic models (needs credentials)."""
    require_token(api)
    try:
        return dict(api.get_models())
    except (KeyError, TypeError, IndexError) as exc:
        raise unexpected_answer("account", exc) from None


def round_submission(api: NumerAPI, model_id: str, round_num: int) -> dict | None:
    """Numerai's record of `model_id`'s (selected) submission for `round_num`, as {"filename",
    "submission_id" (None when Numerai's list of submissions does not name it)}, or None when
    there is none. Uses numerapi's get_submission_filenames and submission_ids."""
    require_token(api)
    try:
        files = api.get_submission_filenames(round_num=round_num, model_id=model_id)
        if not files:
            return None
        filename = files[-1]["filename"]
        ids = {s["filename"]: s["id"] for s in api.submission_ids(model_id)}
    except (KeyError, TypeError, IndexError) as exc:
        raise unexpected_answer("model", exc) from None
    return {"filename": filename, "submission_id": ids.get(filename)}


# same mutation numerapi's upload_predictions sends
CREATE_SUBMISSION_QUERY = """
mutation($filename: String!
         $tournament: Int!
         $modelId: String
         $triggerId: String,
         $dataDatestamp: Int) {
    create_submission(filename: $filename
                      tournament: $tournament
                      modelId: $modelId
                      triggerId: $triggerId
                      source: "numerapi"
                      dataDatestamp: $dataDatestamp) {
        id
    }
}
"""


def upload_predictions(api: NumerAPI, path: str | os.PathLike, model_id: str) -> str:
    """Upload a predictions file for `model_id`; returns the submission id. Same three steps as
    numerapi's upload_predictions (upload slot, PUT, create_submission), but the PUT's status is
    checked and transient failures are retried; auth failures are not."""
    require_token(api)
    path = Path(path)
    if not path.is_file():
        raise ApiError(f"{path}: file not found")
    data = path.read_bytes()
    try:
        slot = api._upload_auth("submission_upload_auth", str(path), api.tournament_id, model_id)
        with_retries(f"upload of {path.name}", lambda: _put(slot["url"], data, path.name))
        result = api.raw_query(CREATE_SUBMISSION_QUERY, {
            "filename": slot["filename"], "tournament": api.tournament_id, "modelId": model_id,
            "triggerId": os.getenv("TRIGGER_ID"), "dataDatestamp": None}, authorization=True)
        return str(result["data"]["create_submission"]["id"])
    except (KeyError, TypeError, IndexError) as exc:
        raise unexpected_answer("create_submission", exc) from None


def _put(url: str, data: bytes, name: str) -> None:
    headers = {"x_compute_id": os.getenv("NUMERAI_COMPUTE_ID")} if os.getenv("NUMERAI_COMPUTE_ID") else {}
    try:
        resp = requests.put(url, data=data, headers=headers, timeout=transport.TIMEOUT)
    except requests.RequestException as exc:
        raise request_failure(exc) from None
    raise_for_retryable(resp)
    if resp.status_code >= 400:
        raise ApiError(f"upload of {name} refused: HTTP {resp.status_code}")


# --- hosted model uploads (export --upload) -----------------------------------------------------

def model_upload_options(api: NumerAPI) -> tuple[dict[str, str], dict[str, str]]:
    """({docker image name: id}, {data version name: id}) that Numerai's model uploads offer, from
    numerapi's model_upload_docker_images and model_upload_data_versions (needs credentials)."""
    require_token(api)
    options = []
    for op, ask in (("computePickleDockerImages", api.model_upload_docker_images),
                    ("computePickleDataVersions", api.model_upload_data_versions)):
        try:
            options.append({str(name): str(ident) for name, ident in ask().items()})
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            raise unexpected_answer(op, exc) from None
    return options[0], options[1]


# same query and mutation numerapi's model_upload sends
MODEL_UPLOAD_AUTH_QUERY = """
    query($filename: String! $modelId: String) {
        computePickleUploadAuth(filename: $filename
                                modelId: $modelId) {
            filename
            url
        }
    }
"""
CREATE_MODEL_UPLOAD_QUERY = """
    mutation($filename: String!
             $tournament: Int!
             $modelId: String
             $dataVersionId: String
             $dockerImageId: String) {
        createComputePickleUpload(filename: $filename
                                  tournament: $tournament
                                  modelId: $modelId
                                  dataVersionId: $dataVersionId
                                  dockerImageId: $dockerImageId) {
            id
        }
    }"""


def upload_model(api: NumerAPI, path: str | os.PathLike, model_id: str, data_version_id: str,
                 docker_image_id: str) -> str:
    """Upload a model pickle for `model_id`; returns the model upload id. Same three steps as
    numerapi's model_upload (upload slot, PUT, createComputePickleUpload), with the PUT's status
    checked and transient failures retried, as upload_predictions does."""
    require_token(api)
    path = Path(path)
    data = path.read_bytes()
    try:
        slot = api.raw_query(MODEL_UPLOAD_AUTH_QUERY, {"filename": path.name, "modelId": model_id},
                             authorization=True)["data"]["computePickleUploadAuth"]
        with_retries(f"upload of {path.name}", lambda: _put(slot["url"], data, path.name))
        result = api.raw_query(CREATE_MODEL_UPLOAD_QUERY, {
            "filename": slot["filename"], "tournament": api.tournament_id, "modelId": model_id,
            "dataVersionId": data_version_id, "dockerImageId": docker_image_id}, authorization=True)
        return str(result["data"]["createComputePickleUpload"]["id"])
    except (KeyError, TypeError, IndexError) as exc:
        raise unexpected_answer("createComputePickleUpload", exc) from None
