"""numerflow.numerai with the real numerapi client over HTTP against the local fake Numerai server."""

from __future__ import annotations

import hashlib
import logging

import pytest

from numerflow import numerai
from numerflow.errors import ApiError, AuthError, DataError
from numerflow.numerai import downloads, transport
from tests.fake_numerai import PUBLIC_ID, SECRET_KEY
from tests.helpers import cli, error_line


MODEL_ID = "11111111-2222-3333-4444-555555555555"


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    """No credentials in the environment and no .env in the working folder."""
    monkeypatch.delenv("NUMERAI_PUBLIC_ID", raising=False)
    monkeypatch.delenv("NUMERAI_SECRET_KEY", raising=False)
    monkeypatch.chdir(tmp_path)


def test_public_calls(fake_numerai):
    client = numerai.client()
    names = numerai.list_datasets(client)
    assert "v5.2/train.parquet" in names and "v5.1/features.json" in names
    assert numerai.current_round(client) == 600
    assert numerai.round_is_open(client) is True
    fake_numerai.round_open = False
    assert numerai.round_is_open(client) is False
    fake_numerai.between_rounds = True
    assert numerai.round_is_open(client) is False


def test_public_calls_need_no_credentials(fake_numerai, no_credentials):
    client = numerai.client()
    assert numerai.current_round(client) == 600
    assert not any(r.authorized for r in fake_numerai.log)


def test_model_ids_only_classic_models(fake_numerai):
    assert numerai.model_ids(numerai.client()) == {"fake_model": MODEL_ID,
                                           "other_model": "66666666-7777-8888-9999-000000000000"}
    assert fake_numerai.log[-1].authorized


def test_missing_credentials_names_both_variables(fake_numerai, no_credentials):
    with pytest.raises(AuthError) as err:
        numerai.model_ids(numerai.client())
    assert str(err.value) == ("Numerai credentials missing (NUMERAI_PUBLIC_ID and NUMERAI_SECRET_KEY): "
                              "set NUMERAI_PUBLIC_ID and NUMERAI_SECRET_KEY in the environment or in a .env file")
    assert fake_numerai.ops() == []  # nothing was sent


def test_credentials_from_dotenv(fake_numerai, no_credentials, tmp_path):
    (tmp_path / ".env").write_text(f"NUMERAI_PUBLIC_ID={PUBLIC_ID}\nNUMERAI_SECRET_KEY={SECRET_KEY}\n")
    assert "fake_model" in numerai.model_ids(numerai.client())
    import os

    assert "NUMERAI_SECRET_KEY" not in os.environ  # read, not exported


def test_rejected_credentials_no_retry_no_secret(fake_numerai):
    fake_numerai.reject_auth()
    with pytest.raises(AuthError) as err:
        numerai.model_ids(numerai.client())
    assert str(err.value) == ("Numerai refused the credentials (Your session is invalid or has expired.); "
                              "check NUMERAI_PUBLIC_ID and NUMERAI_SECRET_KEY")
    assert SECRET_KEY not in str(err.value)
    assert fake_numerai.ops() == ["account"]  # tried once


def test_a_refusal_that_quotes_the_secret_key_is_scrubbed(fake_numerai, capsys):
    fake_numerai.reject_auth(echo_credentials=True)  # the server's error quotes "Token <public>$<secret>"
    with pytest.raises(AuthError) as err:
        numerai.model_ids(numerai.client())
    message = str(err.value)
    assert f"got Token {PUBLIC_ID}$" in message  # the server's own words still reach the user...
    assert SECRET_KEY not in message  # ...without the key they quoted
    assert SECRET_KEY not in "".join(capsys.readouterr())


def test_server_errors_are_retried_then_succeed(fake_numerai):
    fake_numerai.fail("listDatasets", times=2)
    assert "v5.2/train.parquet" in numerai.list_datasets(numerai.client())
    assert fake_numerai.ops() == ["listDatasets"] * 3


def test_server_errors_give_clear_error_after_four_tries(fake_numerai):
    fake_numerai.fail("rounds", times=4)  # 4 tries, as docs/download.md and docs/submit.md say
    with pytest.raises(ApiError) as err:
        numerai.current_round(numerai.client())
    assert str(err.value) == "Numerai API call 'rounds' failed after 4 tries: HTTP 500"
    assert fake_numerai.ops() == ["rounds"] * 4


def test_timeout_is_retried(fake_numerai, monkeypatch):
    monkeypatch.setattr(transport, "TIMEOUT", (2, 0.3))
    fake_numerai.hang("rounds", seconds=1.0)
    assert numerai.current_round(numerai.client()) == 600
    assert fake_numerai.ops() == ["rounds", "rounds"]


def test_unreachable_server(monkeypatch):
    import numerapi.base_api

    monkeypatch.setattr(numerapi.base_api, "API_TOURNAMENT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("NUMERFLOW_RETRY_BASE_SECONDS", "0")
    with pytest.raises(ApiError, match=r"^Numerai could not be reached \(127\.0\.0\.1:9: connection refused; 2 tries\): "
                                       r"for offline work, `numerflow download --synthetic` .*`numerflow quickstart`"):
        numerai.list_datasets(numerai.client())


def test_graphql_error_message(fake_numerai):
    with pytest.raises(ApiError) as err:
        numerai.download_file(numerai.client(), "v9.9/train.parquet", "x.parquet")
    assert str(err.value) == "Numerai API call 'dataset' failed: File not found: v9.9/train.parquet"


def test_client_leaves_root_logger_alone():
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    numerai.client()
    assert (list(root.handlers), root.level) == before


# --- files ------------------------------------------------------------------------------------

def test_download_file(fake_numerai, tmp_path):
    dest = tmp_path / "v5.2" / "train.parquet"
    got = numerai.download_file(numerai.client(), "v5.2/train.parquet", dest)
    assert dest.read_bytes() == fake_numerai.datasets["v5.2/train.parquet"]
    assert got.size == dest.stat().st_size and got.etag
    assert sorted(p.name for p in dest.parent.iterdir()) == ["train.parquet"]


def test_download_resumes_after_dropped_connection(fake_numerai, tmp_path, monkeypatch):
    monkeypatch.setattr(downloads, "CHUNK_BYTES", 256)  # partial chunks reach the disk before the drop
    fake_numerai.drop("v5.2/validation.parquet", after=2000)
    dest = tmp_path / "validation.parquet"
    numerai.download_file(numerai.client(), "v5.2/validation.parquet", dest)
    assert dest.read_bytes() == fake_numerai.datasets["v5.2/validation.parquet"]
    gets = [r for r in fake_numerai.log if r.method == "GET"]
    assert [(g.status, g.range) for g in gets] == [(200, None), (206, "bytes=1792-")]


def test_download_gives_up_without_leaving_files(fake_numerai, tmp_path, monkeypatch):
    monkeypatch.setattr(downloads, "CHUNK_BYTES", 256)  # partial chunks reach the disk before the drop
    fake_numerai.drop("v5.2/train.parquet", times=numerai.RETRY_ATTEMPTS)
    dest = tmp_path / "train.parquet"
    with pytest.raises(ApiError) as err:
        numerai.download_file(numerai.client(), "v5.2/train.parquet", dest)
    assert str(err.value).startswith(f"download of v5.2/train.parquet failed after {numerai.RETRY_ATTEMPTS} tries: ")
    # nothing under the final name; only the partial body, kept for the next run to resume, and its ETag
    partial = numerai.partial_path(dest)
    assert sorted(tmp_path.iterdir()) == [partial, numerai.validator_path(partial)]
    assert fake_numerai.datasets["v5.2/train.parquet"].startswith(partial.read_bytes())


def interrupted_download(server, name: str, dest) -> bytes:
    """A download of `name` that gives up after 1792 bytes (kept in its partial file); returns the
    file as the server had it then."""
    server.drop(name, after=2000)
    server.drop(name, times=numerai.RETRY_ATTEMPTS - 1, after=0)  # the resumed tries get nothing more
    with pytest.raises(ApiError):
        numerai.download_file(numerai.client(), name, dest)
    assert numerai.partial_path(dest).read_bytes() == server.datasets[name][:1792]
    server.log.clear()
    return server.datasets[name]


def etag_of(data: bytes) -> str:
    return '"' + hashlib.md5(data).hexdigest() + '"'


def test_a_file_changed_on_the_server_is_fetched_whole_not_spliced(fake_numerai, tmp_path, monkeypatch):
    monkeypatch.setattr(downloads, "CHUNK_BYTES", 256)  # partial chunks reach the disk before the drop
    name, dest = "v5.2/validation.parquet", tmp_path / "validation.parquet"
    old = interrupted_download(fake_numerai, name, dest)
    # Numerai uploads a new file under the same name, of the same length: old bytes + the new
    # file's rest would pass the length check.
    new = bytes(b ^ 0x5A for b in old[:1792]) + old[1792:]
    assert len(new) == len(old) and new[1792:] == old[1792:]
    fake_numerai.datasets[name] = new
    numerai.download_file(numerai.client(), name, dest)
    assert dest.read_bytes() == new
    gets = [(r.status, r.range, r.if_range) for r in fake_numerai.log if r.method == "GET"]
    assert gets == [(200, "bytes=1792-", etag_of(old))]  # If-Range: the ETag the partial file began with
    assert sorted(tmp_path.iterdir()) == [dest]  # no partial file or validator left


def test_an_unchanged_file_resumes_with_if_range(fake_numerai, tmp_path, monkeypatch):
    monkeypatch.setattr(downloads, "CHUNK_BYTES", 256)
    name, dest = "v5.2/validation.parquet", tmp_path / "validation.parquet"
    data = interrupted_download(fake_numerai, name, dest)
    numerai.download_file(numerai.client(), name, dest)
    assert dest.read_bytes() == data
    gets = [(r.status, r.range, r.if_range) for r in fake_numerai.log if r.method == "GET"]
    assert gets == [(206, "bytes=1792-", etag_of(data))]


def test_download_file_server_error_then_success(fake_numerai, tmp_path):
    fake_numerai.fail("v5.2/features.json", times=2)
    dest = tmp_path / "features.json"
    numerai.download_file(numerai.client(), "v5.2/features.json", dest)
    assert dest.read_bytes() == fake_numerai.datasets["v5.2/features.json"]
    assert fake_numerai.file_gets() == ["v5.2/features.json"] * 3


def test_download_past_round(fake_numerai, tmp_path):
    old_live = fake_numerai.datasets["v5.2/live.parquet"]
    fake_numerai.new_round()
    assert fake_numerai.datasets["v5.2/live.parquet"] != old_live
    dest = tmp_path / "live_600.parquet"
    numerai.download_file(numerai.client(), "v5.2/live.parquet", dest, round_num=600)
    assert dest.read_bytes() == old_live


# --- submissions --------------------------------------------------------------------------------

@pytest.fixture
def predictions_csv(tmp_path):
    path = tmp_path / "preds.csv"
    path.write_text("id,prediction\nn1,0.25\nn2,0.75\n")
    return path


def test_upload_predictions(fake_numerai, predictions_csv):
    fake_numerai.fail("upload")  # the PUT is checked and retried
    sid = numerai.upload_predictions(numerai.client(), predictions_csv, MODEL_ID)
    [sub] = fake_numerai.submissions
    assert sub["id"] == sid and sub["modelId"] == MODEL_ID and sub["tournament"] == 8
    assert fake_numerai.uploads[sub["filename"]] == predictions_csv.read_bytes()
    assert fake_numerai.ops() == ["submission_upload_auth", "create_submission"]


def test_upload_refused_when_round_closed(fake_numerai, predictions_csv):
    fake_numerai.round_open = False
    with pytest.raises(ApiError) as err:
        numerai.upload_predictions(numerai.client(), predictions_csv, MODEL_ID)
    assert str(err.value) == "Numerai API call 'create_submission' failed: Current round not open for submissions"
    assert fake_numerai.submissions == []


def test_upload_needs_credentials(fake_numerai, no_credentials, predictions_csv):
    with pytest.raises(AuthError, match="NUMERAI_PUBLIC_ID and NUMERAI_SECRET_KEY"):
        numerai.upload_predictions(numerai.client(), predictions_csv, MODEL_ID)
    assert fake_numerai.log == []


def test_upload_unknown_model(fake_numerai, predictions_csv):
    with pytest.raises(ApiError, match="^Numerai API call 'submission_upload_auth' failed: Model not found$"):
        numerai.upload_predictions(numerai.client(), predictions_csv, "not-a-model")


def test_download_checks_disk_space_first(fake_numerai, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 100, 100))
    size = len(fake_numerai.datasets["v5.2/train.parquet"])
    with pytest.raises(DataError) as err:
        numerai.download_file(numerai.client(), "v5.2/train.parquet", tmp_path / "train.parquet")
    assert str(err.value) == (f"{tmp_path}: not enough disk space for v5.2/train.parquet "
                              f"(needs {size / 2**30:.2f} GiB, 0.00 GiB free)")
    assert list(tmp_path.iterdir()) == []
    assert fake_numerai.file_gets() == ["v5.2/train.parquet"]  # no retry


def test_download_unwritable_destination(fake_numerai, tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(DataError, match=r"afile/train.parquet: cannot write \(File exists\)$"):
        numerai.download_file(numerai.client(), "v5.2/train.parquet", tmp_path / "afile" / "train.parquet")
    assert fake_numerai.file_gets() == []


def test_fake_server_answers_numerapi_round_and_account_calls(fake_numerai):
    """The fake answers numerapi's own methods the way the live helpers use them."""
    client = numerai.client()
    assert client.check_new_round(hours=12) is True
    assert client.get_account()["username"] == "fake_user"
    assert client.get_models(tournament=11) == {"signals_model": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"}
    fake_numerai.between_rounds = True
    assert client.check_new_round() is False


# ---- NUMERFLOW_RETRY_BASE_SECONDS --------------------------------------------------------------

@pytest.mark.parametrize("value", ["inf", "nan", "-1", "1e300", "two"])
def test_a_bad_retry_base_is_one_error_line_before_any_request(in_tmp, monkeypatch, value):
    monkeypatch.setenv("NUMERFLOW_RETRY_BASE_SECONDS", value)
    result = cli("download", "--data-dir", in_tmp / "data")
    assert error_line(result) == (f"Error: NUMERFLOW_RETRY_BASE_SECONDS must be a number of seconds from 0 to "
                                  f"3600, got '{value}'")
    assert not (in_tmp / "data").exists()


def test_a_good_retry_base_is_used(monkeypatch):
    monkeypatch.setenv("NUMERFLOW_RETRY_BASE_SECONDS", " 0.5 ")
    assert numerai.retry_base_seconds() == 0.5
    monkeypatch.setenv("NUMERFLOW_RETRY_BASE_SECONDS", "")
    assert numerai.retry_base_seconds() == numerai.RETRY_BASE_SECONDS
