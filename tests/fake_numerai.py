"""A local fake of Numerai's tournament API for tests: a threaded HTTP server on 127.0.0.1 that answers
the GraphQL operations numerapi 3.1.1 sends (recognised by their root field, as numerapi sends no
operationName) and serves/accepts the files behind the URLs it hands out.

    def test_something(fake_numerai):          # the fixture lives in tests/conftest.py
        fake_numerai.fail("dataset", times=2)   # next 2 `dataset` queries answer HTTP 500
        fake_numerai.drop("v5.2/train.parquet") # next GET of that file closes the connection midway
        fake_numerai.stall("v5.2/validation.parquet", after=2000, seconds=60)  # slow: kill it midway
        fake_numerai.fail("rounds", status=429, retry_after="3")               # rate limited
        fake_numerai.new_round()                # round + 1, new live files
        ...
        assert fake_numerai.file_gets() == []   # request log

GraphQL root fields answered: listDatasets, dataset, rounds (number: 0 = current round, else all),
account (models etc.), submission_upload_auth, create_submission, submissions (a model's
submissions: numerapi's submission_ids) and model { submissions } (numerapi's
get_submission_filenames). Files: GET /files/<round>/<name> (honours `Range: bytes=N-`, and
`If-Range: <ETag>`: the whole file when the ETag no longer matches; sends Content-Length and an
MD5 ETag unless `send_length` / `send_etag` are False), PUT /upload/<token>.
Authenticated operations need the header `Authorization: Token <public_id>$<secret_key>` with a pair in `accepted_keys`; otherwise they get
Numerai's GraphQL error "Your session is invalid or has expired."
Diagnostics runs and live round scores (diagnosticsUploadAuth, createDiagnostics, diagnostics,
submissionScores, v2RoundModelPerformances) are answered by tests/fake_numerai_live.py from
`server.live`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import re
import socket
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests import fake_numerai_live

TOURNAMENT = 8  # Numerai Classic
PUBLIC_ID = "FAKEPUBLICID"
SECRET_KEY = "FAKESECRETKEY0123456789"
AUTH_ERROR = "Your session is invalid or has expired."
ROUND_CLOSED_ERROR = "Current round not open for submissions"
AUTH_OPS = {"account", "submission_upload_auth", "create_submission", "model", "models", "submissions",
            *fake_numerai_live.AUTH_OPS}
LIVE_NAMES = ("live.parquet", "live_example_preds.parquet", "live_example_preds.csv",
              "live_benchmark_models.parquet")


# --- small real Numerai-shaped files -----------------------------------------------------------

def _parquet_bytes(frame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf)
    return buf.getvalue()


QUANTUM_FEATURES = 3  # v5.3's `quantum` set (807 features at Numerai), new columns beside v5.2's
V53_TARGETS = ("target", "target_ender_20", "target_cyrusd_20")  # `target` is target_ender_20's alias


def _is_v53_or_later(version: str) -> bool:
    m = re.fullmatch(r"v(\d+)\.(\d+)", version)
    return bool(m) and (int(m.group(1)), int(m.group(2))) >= (5, 3)


def benchmark_columns(version: str) -> list[str]:
    """The benchmark models' columns of a release: its own LightGBM on the main target first."""
    return ["v53_lgbm_ender20", "v52_lgbm_ender20", "v53_lgbm_ender60"] if _is_v53_or_later(version) else []


def make_version_files(version: str = "v5.2", round_number: int = 600, rows: int = 60,
                       n_features: int = 4, seed: int = 0) -> dict[str, bytes]:
    """`{"<version>/<name>": bytes}` for every file Numerai lists per version (tiny, valid Parquet/JSON/CSV).

    v5.3 and later have the 2026 layout: a `quantum` feature set (also in `all`), `target_ender_20`
    beside its alias `target` and an auxiliary target, and the benchmark models' files
    ({train,validation,live}_benchmark_models.parquet). Older versions keep the short file list
    the older tests count on."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    v53 = _is_v53_or_later(version)
    features = [f"feature_f{i}" for i in range(n_features)]
    quantum = [f"feature_quantum_q{i}" for i in range(QUANTUM_FEATURES)] if v53 else []

    def frame(kind: str, eras: list[str], with_target: bool = True):
        n = rows * len(eras)
        columns = features + quantum
        df = pd.DataFrame(rng.integers(0, 5, size=(n, len(columns))).astype("int8"), columns=columns)
        df.insert(0, "era", np.repeat(eras, rows))
        df.insert(1, "data_type", kind)
        if with_target:
            df["target"] = rng.integers(0, 5, size=n) / 4
            if v53:
                df["target_ender_20"] = df["target"]
                df["target_cyrusd_20"] = rng.integers(0, 5, size=n) / 4
        df.index = pd.Index([f"n{kind[0]}{round_number:05d}{i:09x}" for i in range(n)], name="id")
        return df

    def benchmarks(df):
        """Benchmark predictions in [0, 1] that lean on the target where there is one."""
        base = df["target"].to_numpy() if "target" in df else np.full(len(df), 0.5)
        columns = {name: np.clip(0.3 * base + 0.7 * rng.random(len(df)), 0, 1) for name in benchmark_columns(version)}
        return pd.DataFrame({"era": df["era"], **columns}, index=df.index)

    train = frame("train", ["0001", "0002", "0003"])
    validation = frame("validation", ["0008", "0009"])
    live = frame("live", [f"{round_number:04d}"], with_target=False)
    ids = pd.Index(live.index, name="id")
    live_preds = pd.DataFrame({"prediction": rng.random(len(ids))}, index=ids)
    val_preds = pd.DataFrame({"prediction": rng.random(len(validation))}, index=validation.index)
    meta = pd.DataFrame({"era": validation["era"], "numerai_meta_model": rng.random(len(validation))},
                        index=validation.index)
    sets = {"small": features[:2], "medium": features, "all": features + quantum}
    if v53:
        sets["quantum"] = quantum
    meta_json = {"feature_sets": sets, "targets": list(V53_TARGETS) if v53 else ["target"]}
    files = {
        "train.parquet": _parquet_bytes(train),
        "validation.parquet": _parquet_bytes(validation),
        "live.parquet": _parquet_bytes(live),
        "features.json": json.dumps(meta_json).encode(),
        "meta_model.parquet": _parquet_bytes(meta),
        "validation_example_preds.parquet": _parquet_bytes(val_preds),
        "validation_example_preds.csv": val_preds.to_csv().encode(),
        "live_example_preds.parquet": _parquet_bytes(live_preds),
        "live_example_preds.csv": live_preds.to_csv().encode(),
    }
    if v53:
        for kind, df in (("train", train), ("validation", validation), ("live", live)):
            files[f"{kind}_benchmark_models.parquet"] = _parquet_bytes(benchmarks(df))
    return {f"{version}/{name}": data for name, data in files.items()}


# --- the server -------------------------------------------------------------------------------

@dataclass
class LoggedRequest:
    method: str
    path: str  # for files: the dataset name ("v5.2/train.parquet") or "upload"
    op: str | None  # GraphQL root field, None for file requests
    variables: dict | None = None
    authorized: bool = False  # a valid Authorization header came with it
    range: str | None = None
    if_range: str | None = None
    status: int = 0


@dataclass
class Fault:
    kind: str  # "status" | "drop" | "hang" | "stall"
    status: int = 500
    after: int | None = None  # drop/stall: bytes sent before closing/stalling (None: half the body)
    seconds: float = 0.0  # hang: delay before answering; stall: delay after `after` bytes
    retry_after: str | None = None  # status: a Retry-After header to send


def _iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeNumerai:
    """State of the fake API. Mutate it freely from tests (it is guarded by `lock`)."""

    def __init__(self, versions=("v5.1", "v5.2"), round_number: int = 600):
        self.lock = threading.RLock()
        self.round_number = round_number
        self.round_open = True  # openTime < now < closeStakingTime
        self.between_rounds = False  # rounds(number: 0) answers ROUND_CLOSED_ERROR
        self.versions = list(versions)
        self.datasets: dict[str, bytes] = {}  # files of the current round
        for i, v in enumerate(self.versions):
            self.datasets.update(make_version_files(v, round_number, seed=i))
        self.past_rounds: dict[int, dict[str, bytes]] = {}  # round -> its files
        self.models: dict[str, str] = {"fake_model": "11111111-2222-3333-4444-555555555555",
                                       "other_model": "66666666-7777-8888-9999-000000000000"}
        self.signals_models: dict[str, str] = {"signals_model": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"}
        self.accepted_keys: set[tuple[str, str]] = {(PUBLIC_ID, SECRET_KEY)}
        self.echo_credentials = False  # auth errors quote the Authorization header (reject_auth)
        self.upload_slots: dict[str, str] = {}  # token -> filename handed out by submission_upload_auth
        self.uploads: dict[str, bytes] = {}  # filename -> body received by PUT
        self.submissions: list[dict] = []  # create_submission calls that succeeded: variables + id
        self.submission_check = None  # optional callable(bytes) -> error message | None
        self.send_length = True  # file GETs carry Content-Length (False: the body ends when the connection closes)
        self.send_etag = True  # file GETs carry an ETag (the body's MD5, as S3 sends for single-part uploads)
        self.log: list[LoggedRequest] = []
        self.faults: dict[str, list[Fault]] = {}
        self._httpd: ThreadingHTTPServer | None = None
        self.url = ""
        # hosted model uploads (export --upload): image names as Numerai lists them; set a list to change
        self.docker_images: list[str] = list(DOCKER_IMAGES)
        self.model_uploads: list[dict] = []  # createComputePickleUpload calls that succeeded: variables + id + body
        self.live = fake_numerai_live.LiveState()  # diagnostics runs and round scores

    # ---- failure injection
    def fail(self, target: str, times: int = 1, status: int = 500, retry_after: str | None = None) -> None:
        """The next `times` requests for `target` (a GraphQL root field such as "dataset", a file
        name such as "v5.2/train.parquet", or "upload" for PUTs) answer HTTP `status` (with a
        Retry-After header when given, e.g. status=429, retry_after="1")."""
        self._add_fault(target, times, Fault("status", status=status, retry_after=retry_after))

    def stall(self, filename: str, after: int, seconds: float, times: int = 1) -> None:
        """The next `times` GETs of `filename` send `after` bytes of the body, then wait `seconds`
        before sending the rest (a slow download a test can kill midway)."""
        self._add_fault(filename, times, Fault("stall", after=after, seconds=seconds))

    def drop(self, filename: str, times: int = 1, after: int | None = None) -> None:
        """The next `times` GETs of `filename` send the headers and `after` bytes of the body
        (default: half) and then close the connection. `filename` may also be a GraphQL root field
        (e.g. "diagnostics"): the next `times` such requests are read, then the connection is closed
        without an answer (a dropped connection)."""
        self._add_fault(filename, times, Fault("drop", after=after))

    def hang(self, target: str, seconds: float, times: int = 1) -> None:
        """The next `times` requests for `target` wait `seconds` before answering (timeouts)."""
        self._add_fault(target, times, Fault("hang", seconds=seconds))

    def reject_auth(self, echo_credentials: bool = False) -> None:
        """Every key is refused from now on (authenticated calls get AUTH_ERROR). With
        `echo_credentials`, the error also quotes the Authorization header it got, secret key
        included, as careless servers do: the client must scrub it."""
        with self.lock:
            self.accepted_keys = set()
            self.echo_credentials = echo_credentials

    def _add_fault(self, target: str, times: int, fault: Fault) -> None:
        with self.lock:
            self.faults.setdefault(target, []).extend([fault] * times)

    def _take_fault(self, target: str) -> Fault | None:
        with self.lock:
            queue = self.faults.get(target)
            return queue.pop(0) if queue else None

    # ---- rounds
    def new_round(self, seed: int | None = None) -> int:
        """Open the next round: the old round's files stay reachable with `round`, the live files
        (live, live example preds) change."""
        with self.lock:
            self.past_rounds[self.round_number] = dict(self.datasets)
            self.round_number += 1
            for i, v in enumerate(self.versions):
                fresh = make_version_files(v, self.round_number, seed=(seed if seed is not None else self.round_number + i))
                for name in LIVE_NAMES:
                    key = f"{v}/{name}"
                    if key in fresh:
                        self.datasets[key] = fresh[key]
            self.round_open = True
            return self.round_number

    def files_for_round(self, round_number: int | None) -> dict[str, bytes] | None:
        with self.lock:
            if round_number in (None, 0, self.round_number):
                return self.datasets
            return self.past_rounds.get(round_number)

    def round_info(self, number: int | None = None) -> dict:
        number = number or self.round_number
        now = dt.datetime.now(dt.timezone.utc)
        open_time = now - dt.timedelta(hours=(1 if self.round_open else 30))
        close = now + dt.timedelta(hours=(20 if self.round_open else -6))
        if number != self.round_number:  # a past round
            days = self.round_number - number
            open_time, close = open_time - dt.timedelta(days=days), close - dt.timedelta(days=days)
        return {"number": number, "openTime": _iso(open_time), "closeTime": _iso(close + dt.timedelta(days=1)),
                "closeStakingTime": _iso(close), "resolveTime": _iso(close + dt.timedelta(days=30)),
                "resolvedGeneral": False, "resolvedStaking": False, "tournament": TOURNAMENT}

    # ---- request log helpers
    def ops(self) -> list[str]:
        """GraphQL root fields in the order they were asked."""
        return [r.op for r in self.log if r.op]

    def file_gets(self) -> list[str]:
        """Dataset names fetched with GET (any status), in order."""
        return [r.path for r in self.log if r.method == "GET"]

    def file_url(self, filename: str, round_number: int) -> str:
        return f"{self.url}/files/{round_number}/{urllib.parse.quote(filename, safe='')}"

    # ---- lifecycle
    def start(self) -> "FakeNumerai":
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


# --- GraphQL resolvers -------------------------------------------------------------------------

class GraphQLFailure(Exception):
    pass


def root_field(query: str) -> str | None:
    """The first field inside the operation's selection set: `query ($a: Int) { listDatasets(...) }`."""
    m = re.search(r"\{\s*([A-Za-z_]\w*)", query or "")
    return m.group(1) if m else None


def _resolve(server: FakeNumerai, op: str, query: str, v: dict, authorized: bool):
    if op in AUTH_OPS and not authorized:
        raise GraphQLFailure(AUTH_ERROR)
    if op == "listDatasets":
        files = server.files_for_round(v.get("round"))
        if files is None:
            raise GraphQLFailure(f"Round {v.get('round')} not found")
        return sorted(files)
    if op == "dataset":
        rnd = v.get("round") or server.round_number
        files = server.files_for_round(rnd)
        if files is None or v.get("filename") not in files:
            raise GraphQLFailure(f"File not found: {v.get('filename')}")
        return server.file_url(v["filename"], rnd)
    if op == "rounds":
        if re.search(r"number:\s*0\b", query) or v.get("number") == 0:
            if server.between_rounds:
                raise GraphQLFailure(ROUND_CLOSED_ERROR)
            return [server.round_info()]
        return [server.round_info(n) for n in range(server.round_number, 0, -1)][:50]
    if op == "account":
        models = [{"id": i, "name": n, "tournament": TOURNAMENT} for n, i in server.models.items()]
        models += [{"id": i, "name": n, "tournament": 11} for n, i in server.signals_models.items()]
        return {"id": "account-id", "username": "fake_user", "email": "fake@example.com",
                "insertedAt": "2020-01-01T00:00:00Z", "availableNmr": "1.0", "models": models,
                "apiTokens": [], "mfaEnabled": False, "status": "VERIFIED", "walletAddress": None}
    if op == "submission_upload_auth":
        if v.get("modelId") not in server.models.values():
            raise GraphQLFailure("Model not found")
        token = uuid.uuid4().hex
        filename = f"{token}/{v.get('filename')}"
        with server.lock:
            server.upload_slots[token] = filename
        return {"filename": filename, "url": f"{server.url}/upload/{token}"}
    if op == "create_submission":
        if v.get("modelId") not in server.models.values():
            raise GraphQLFailure("Model not found")
        if v.get("tournament") != TOURNAMENT:
            raise GraphQLFailure("Invalid tournament")
        if not server.round_open or server.between_rounds:
            raise GraphQLFailure(ROUND_CLOSED_ERROR)
        body = server.uploads.get(v.get("filename"))
        if body is None:
            raise GraphQLFailure("Submission file not uploaded")
        if server.submission_check:
            problem = server.submission_check(body)
            if problem:
                raise GraphQLFailure(problem)
        record = dict(v, id=str(uuid.uuid4()), round=server.round_number,
                      insertedAt=_iso(dt.datetime.now(dt.timezone.utc)))
        with server.lock:
            server.submissions.append(record)
        return {"id": record["id"]}
    if op in MODEL_UPLOAD_OPS:
        return _resolve_model_upload(server, op, v, authorized)
    if op in fake_numerai_live.OPS:
        try:
            return fake_numerai_live.resolve(server, op, v)
        except ValueError as exc:
            raise GraphQLFailure(str(exc)) from None
    if op == "submissions":  # numerapi's submission_ids(model_id)
        return [{"id": r["id"], "filename": r["filename"], "insertedAt": r["insertedAt"]}
                for r in server.submissions if r.get("modelId") == v.get("modelId")]
    if op == "model":  # numerapi's get_submission_filenames(round_num=, model_id=)
        if v.get("modelId") not in server.models.values():
            raise GraphQLFailure("Model not found")
        latest = {}  # the last submission of each round is the selected one
        for r in server.submissions:
            if r.get("modelId") == v.get("modelId"):
                latest[r["round"]] = r
        return {"submissions": [{"filename": r["filename"], "selected": latest.get(r["round"]) is r,
                                 "round": {"number": r["round"], "tournament": TOURNAMENT}}
                                for r in server.submissions if r.get("modelId") == v.get("modelId")]}
    raise GraphQLFailure(f"fake Numerai: unsupported operation {op!r}")


# --- hosted model uploads: numerapi's model_upload, model_upload_docker_images, model_upload_data_versions

DOCKER_IMAGES = ("Python 3.10", "Python 3.11", "Python 3.12", "Python 3.13")
MODEL_UPLOAD_OPS = {"computePickleDockerImages", "computePickleDataVersions", "computePickleUploadAuth",
                    "createComputePickleUpload"}


def fixed_id(kind: str, name: str) -> str:
    """A stable UUID per image or data version name (Numerai's ids are UUIDs)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"fake-numerai/{kind}/{name}"))


def _resolve_model_upload(server: FakeNumerai, op: str, v: dict, authorized: bool):
    if not authorized:
        raise GraphQLFailure(AUTH_ERROR)
    if op == "computePickleDockerImages":
        return [{"name": name, "id": fixed_id("image", name)} for name in server.docker_images]
    if op == "computePickleDataVersions":  # the versions the server offers files for
        return [{"name": name, "id": fixed_id("data", name)} for name in server.versions]
    if v.get("modelId") not in server.models.values():
        raise GraphQLFailure("Model not found")
    if op == "computePickleUploadAuth":
        if not str(v.get("filename", "")).endswith(".pkl"):
            raise GraphQLFailure("File must be a .pkl")
        token = uuid.uuid4().hex
        filename = f"{token}/{v['filename']}"
        server.upload_slots[token] = filename  # the PUT lands in server.uploads, as for submissions
        return {"filename": filename, "url": f"{server.url}/upload/{token}"}
    # createComputePickleUpload
    body = server.uploads.get(v.get("filename"))
    if body is None:
        raise GraphQLFailure("Model file not uploaded")
    if v.get("dataVersionId") not in {fixed_id("data", n) for n in server.versions}:
        raise GraphQLFailure("Invalid data version")
    if v.get("dockerImageId") not in {fixed_id("image", n) for n in server.docker_images}:
        raise GraphQLFailure("Invalid docker image")
    record = dict(v, id=str(uuid.uuid4()), body=body)
    server.model_uploads.append(record)
    return {"id": record["id"]}


# --- HTTP handler ------------------------------------------------------------------------------

def _make_handler(server: FakeNumerai):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep pytest output clean
            pass

        def _authorized(self) -> bool:
            header = self.headers.get("Authorization", "")
            if not header.startswith("Token ") or "$" not in header:
                return False
            pub, secret = header[len("Token "):].split("$", 1)
            with server.lock:
                return (pub, secret) in server.accepted_keys

        def _record(self, **kw) -> LoggedRequest:
            entry = LoggedRequest(method=self.command, **kw)
            with server.lock:
                server.log.append(entry)
            return entry

        def _send(self, status: int, body: bytes, ctype: str = "application/json", extra: dict | None = None):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, val in (extra or {}).items():
                self.send_header(k, val)
            self.end_headers()
            self.wfile.write(body)

        def _answer_fault(self, fault: Fault | None, entry: LoggedRequest) -> bool:
            """Apply an injected fault; True when it answered the request (an HTTP error)."""
            if fault is None:
                return False
            if fault.kind == "hang":
                time.sleep(fault.seconds)
            if fault.kind == "status":
                entry.status = fault.status
                extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
                self._send(fault.status, b'{"message": "fake Numerai: injected failure"}', extra=extra)
                return True
            return False  # "drop" and "stall" are applied while the body is written

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            try:
                payload = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                self._record(path="/", op=None, status=400)
                return self._send(400, b'{"errors": [{"message": "invalid JSON"}]}')
            query, variables = payload.get("query", ""), payload.get("variables") or {}
            op = root_field(query)
            entry = self._record(path="/", op=op, variables=variables, authorized=self._authorized())
            fault = server._take_fault(op or "")
            if self._answer_fault(fault, entry):
                return
            if fault is not None and fault.kind == "drop":  # the request read, no answer: the connection closes
                entry.status = None
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            try:
                with server.lock:
                    data = _resolve(server, op, query, variables, entry.authorized)
                body = {"data": {op: data}}
            except GraphQLFailure as exc:
                message = str(exc)
                if server.echo_credentials and message == AUTH_ERROR:
                    message += f" (got {self.headers.get('Authorization')})"
                body = {"errors": [{"message": message, "path": [op]}], "data": None}
            entry.status = 200
            self._send(200, json.dumps(body).encode())

        def do_GET(self):
            m = re.fullmatch(r"/files/(\d+)/([^?]+)", self.path)
            if not m:
                self._record(path=self.path, op=None, status=404)
                return self._send(404, b"not found", "text/plain")
            rnd, name = int(m.group(1)), urllib.parse.unquote(m.group(2))
            rng, if_range = self.headers.get("Range"), self.headers.get("If-Range")
            entry = self._record(path=name, op=None, range=rng, if_range=if_range)
            fault = server._take_fault(name)
            if self._answer_fault(fault, entry):
                return
            files = server.files_for_round(rnd)
            data = files.get(name) if files else None
            if data is None:
                entry.status = 404
                return self._send(404, b"NoSuchKey", "application/xml")
            etag = '"' + hashlib.md5(data).hexdigest() + '"'
            start = 0
            # If-Range (RFC 9110 13.1.5): the range only while the file still has that ETag, else all of it.
            if (rng and (rm := re.fullmatch(r"bytes=(\d+)-", rng)) and int(rm.group(1)) < len(data)
                    and if_range in (None, etag)):
                start = int(rm.group(1))
            body = data[start:]
            status = 206 if start else 200
            entry.status = status
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            if server.send_length:
                self.send_header("Content-Length", str(len(body)))
            else:  # HTTP/1.1 without a length: the body is delimited by closing the connection
                self.send_header("Connection", "close")
                self.close_connection = True
            if server.send_etag:
                self.send_header("ETag", etag)
            self.send_header("Accept-Ranges", "bytes")
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if fault is not None and fault.kind == "drop":
                cut = fault.after if fault.after is not None else len(body) // 2
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            if fault is not None and fault.kind == "stall":
                self.wfile.write(body[:fault.after])
                self.wfile.flush()
                time.sleep(fault.seconds)
                body = body[fault.after:]
            self.wfile.write(body)

        def do_PUT(self):
            m = re.fullmatch(r"/upload/(\w+)", self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            entry = self._record(path="upload", op=None)
            if self._answer_fault(server._take_fault("upload"), entry):
                return
            with server.lock:
                filename = server.upload_slots.get(m.group(1)) if m else None
                if filename is not None:
                    server.uploads[filename] = body
            entry.status = 200 if filename else 403
            self._send(entry.status, b"", "text/plain")

    return Handler
