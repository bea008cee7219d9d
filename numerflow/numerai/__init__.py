"""Numerai's API, through numerapi: the only package that imports it.

numerapi's queries and answer parsing are used as they are; its transport is replaced (a subclass
overrides `raw_query`) because numerapi sleeps 5 s + 10 s on 5xx and then returns `{}` (callers
die on KeyError('data')), sends without a timeout, and reads credentials into the process
environment. Here every call has a timeout, transient failures (5xx, dropped connections,
timeouts) are retried with a short exponential backoff, and every failure becomes an ApiError or
AuthError with one clear line that never contains the secret key.

Files (datasets) are fetched here too, not with numerapi's `download_dataset`: that one always
GETs the file even when it is complete locally, resumes with an unchecked Range request and never
checks the byte count. `download_file` asks numerapi's `dataset` query for the URL, streams to a
partial file that survives kills, resumes it only on a 206 and only while the server's file is the
one the partial file began with (If-Range), accepts it only when it is provably whole (length,
else ETag, else structure) and renames it.

The package, by concern: `credentials` (where the keys come from, keeping the secret out of
messages), `transport` (timeouts, retries, typed errors, the client), `downloads` (data files with
resume) and `submissions` (rounds, models, predictions and model uploads). Callers use the names
below: `from numerflow import numerai; numerai.client()`. Tests that tune a constant
(TIMEOUT, CHUNK_BYTES) or time.sleep set it on the module that reads it.
"""

from numerflow.numerai.credentials import (CREDENTIAL_VARS, credentials, missing_credentials_message,
                                           require_credentials)
from numerflow.numerai.downloads import FetchedFile, download_file, list_datasets, partial_path, validator_path
from numerflow.numerai.submissions import (current_round, model_ids, model_upload_options, round_is_open,
                                           round_submission, upload_model, upload_predictions)
from numerflow.numerai.transport import (RETRY_ATTEMPTS, RETRY_BASE_SECONDS, GraphQLAuthError, GraphQLError,
                                         NumerflowAPI, client, retry_base_seconds)

__all__ = ["CREDENTIAL_VARS", "RETRY_ATTEMPTS", "RETRY_BASE_SECONDS", "FetchedFile", "GraphQLAuthError",
           "GraphQLError", "NumerflowAPI", "client", "credentials", "current_round", "download_file",
           "list_datasets", "missing_credentials_message", "model_ids", "model_upload_options", "partial_path",
           "require_credentials", "retry_base_seconds", "round_is_open", "round_submission", "upload_model", "upload_predictions",
           "validator_path"]
