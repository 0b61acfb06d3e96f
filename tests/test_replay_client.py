"""The replay client against a minimal in-process fake of §3's predict, feedback and current
version routes, and (records under a feature schema) against the real API.

The fake only follows the response shapes; the end-to-end replay of vectors against the real
API is tested elsewhere.
"""

from __future__ import annotations

import argparse
import csv
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from models.features import FeatureSchema
from service import replay_client
from service.api import create_app
from service.cli import uvicorn_config
from service.config import Settings
from service.replay_client import ReplayError, ReplayReport, add_arguments, main, replay_csv
from service.store.keys import Keys
from tests.conftest import free_port
from tests.data_digits import write_digits_csv


class FakeMnemo:
    """Predicts label = int(x0) % 2 (a record without x0: 0); dedupes feedback by
    prediction_id / feedback_id; reports `features` as its current version's schema."""

    def __init__(self) -> None:
        self.url = ""
        self.features: dict[str, Any] | None = None
        self.version_reads = 0
        self.int_labels = False
        self.logged = True
        self.predict_statuses: list[int] = []  # answered (once each) before normal service
        self.feedback_statuses: list[int] = []
        self.predicts: list[dict[str, Any]] = []
        self.feedbacks: list[dict[str, Any]] = []
        self.feedback_times: list[float] = []
        self.auth: list[str | None] = []
        self._seen: set[str] = set()
        self._next_id = 0

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/predict")
        async def predict(request: Request) -> JSONResponse:
            body = await request.json()
            self.predicts.append(body)
            self.auth.append(request.headers.get("authorization"))
            if self.predict_statuses:
                status = self.predict_statuses.pop(0)
                return JSONResponse({"detail": "scripted"}, status_code=status)
            predictions = []
            for row in body["inputs"]:
                self._next_id += 1
                label: str | int = int(row.get("x0", 0) if isinstance(row, dict) else row[0]) % 2
                label = label if self.int_labels else str(label)
                predictions.append({"id": f"p{self._next_id}", "label": label})
            labels = [0, 1] if self.int_labels else ["0", "1"]
            return JSONResponse(
                {
                    "model_version": 1,
                    "labels": labels,
                    "predictions": predictions,
                    "logged": self.logged,
                }
            )

        @app.post("/v1/feedback")
        async def feedback(request: Request) -> JSONResponse:
            body = await request.json()
            self.feedbacks.append(body)
            self.feedback_times.append(time.monotonic())
            if self.feedback_statuses:
                status = self.feedback_statuses.pop(0)
                headers = {"Retry-After": "1"} if status in (429, 503) else None
                return JSONResponse({"detail": "scripted"}, status_code=status, headers=headers)
            accepted = duplicates = 0
            for item in body["items"]:
                key = item.get("prediction_id") or item["feedback_id"]
                if key in self._seen:
                    duplicates += 1
                else:
                    self._seen.add(key)
                    accepted += 1
            return JSONResponse({"accepted": accepted, "duplicates": duplicates}, 202)

        @app.get("/v1/versions/current")
        async def current() -> JSONResponse:
            self.version_reads += 1
            architecture: dict[str, Any] = {"model": "mlp", "input_dim": 2, "hidden": [8]}
            if self.features is not None:
                architecture["features"] = self.features
            return JSONResponse({"version": 3, "parent": 2, "created_at": "", "samples_seen": 9,
                                 "last_stream_id": "0-0", "strategy": "online-ewc",
                                 "labels": ["0", "1"], "status": "active", "eval": {},
                                 "architecture": architecture})

        return app

    def predict_ids(self) -> list[str]:
        return [f"p{i}" for i in range(1, self._next_id + 1)]


@pytest.fixture
def fake() -> Iterator[FakeMnemo]:
    mnemo = FakeMnemo()
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only when the listener
    # says so; with proto 0 every request waits ~40 ms on Nagle + delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(mnemo.app(), log_level="warning", lifespan="off", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not server.started:
        assert time.monotonic() < deadline, "fake server did not start"
        time.sleep(0.01)
    mnemo.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    yield mnemo
    server.should_exit = True
    thread.join(5)
    sock.close()


def write_csv(path: Path, n: int, *, tags: list[str] | None = None) -> list[str]:
    """Rows x0=i, x1=i/2; label int(x0) % 2 except every 5th row (the fake gets it wrong)."""
    labels = [str((i + (i % 5 == 0)) % 2) for i in range(n)]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["x0", "tag", "x1", "y"] if tags else ["x0", "x1", "y"])
        for i in range(n):
            if tags:
                w.writerow([i, tags[i % len(tags)], i / 2, labels[i]])
            else:
                w.writerow([i, i / 2, labels[i]])
    return labels


def test_batches_ids_and_prequential_accuracy(fake: FakeMnemo, tmp_path: Path) -> None:
    labels = write_csv(tmp_path / "d.csv", 40)
    report = replay_csv(tmp_path / "d.csv", url=fake.url, label_column="y", token="s3cret", progress=False)
    assert [len(p["inputs"]) for p in fake.predicts] == [16, 16, 8]
    assert all("tag" not in p for p in fake.predicts)
    assert fake.predicts[0]["inputs"][:2] == [[0.0, 0.0], [1.0, 0.5]]  # label column dropped
    assert fake.auth == ["Bearer s3cret"] * 3
    items = [item for fb in fake.feedbacks for item in fb["items"]]
    assert [len(fb["items"]) for fb in fake.feedbacks] == [16, 16, 8]
    assert items == [
        {"prediction_id": pid, "label": label} for pid, label in zip(fake.predict_ids(), labels, strict=True)
    ]
    assert report.accuracy == pytest.approx(32 / 40)  # rows 0, 5, …, 35 are mispredicted
    assert (report.rows, report.predicted, report.unpredicted) == (40, 40, 0)
    assert (report.accepted, report.duplicates, report.errors) == (40, 0, {})
    assert report.rows_per_second > 0


def test_mixed_tags_are_split_per_request(fake: FakeMnemo, tmp_path: Path) -> None:
    write_csv(tmp_path / "d.csv", 12, tags=["a", "a", "b"])
    report = replay_csv(
        tmp_path / "d.csv",
        url=fake.url,
        label_column="y",
        tag_column="tag",
        batch_size=6,
        progress=False,
    )
    assert [(p["tag"], len(p["inputs"])) for p in fake.predicts] == [
        ("a", 4),
        ("b", 2),
        ("a", 4),
        ("b", 2),
    ]
    assert fake.predicts[0]["inputs"][:2] == [[0.0, 0.0], [1.0, 0.5]]  # tag column dropped
    assert fake.predicts[1]["inputs"] == [[2.0, 1.0], [5.0, 2.5]]
    assert [{i["tag"] for i in fb["items"]} for fb in fake.feedbacks] == [{"a"}, {"b"}] * 2
    assert report.rows == report.accepted == 12


def test_409_sends_feedback_with_inputs(fake: FakeMnemo, tmp_path: Path) -> None:
    labels = write_csv(tmp_path / "d.csv", 24)
    fake.predict_statuses = [409]
    report = replay_csv(tmp_path / "d.csv", url=fake.url, label_column="y", progress=False)
    first = fake.feedbacks[0]["items"]
    assert [(i["inputs"], i["label"]) for i in first] == [([float(r), r / 2], labels[r]) for r in range(16)]
    assert all("prediction_id" not in i and i["feedback_id"] for i in first)
    assert "prediction_id" in fake.feedbacks[1]["items"][0]
    assert (report.predicted, report.unpredicted, report.accepted) == (8, 16, 24)
    assert report.accuracy == pytest.approx(7 / 8)  # rows 16..23; 20 is mispredicted
    assert report.errors == {}


def test_unlogged_predictions_send_inputs(fake: FakeMnemo, tmp_path: Path) -> None:
    write_csv(tmp_path / "d.csv", 10)
    fake.logged = False
    report = replay_csv(tmp_path / "d.csv", url=fake.url, label_column="y", progress=False)
    assert all("inputs" in i for i in fake.feedbacks[0]["items"])
    assert (report.predicted, report.unpredicted, report.accepted) == (10, 0, 10)
    assert report.accuracy == pytest.approx(8 / 10)


def test_429_retry_after_is_honoured(fake: FakeMnemo, tmp_path: Path) -> None:
    write_csv(tmp_path / "d.csv", 16)
    fake.feedback_statuses = [429]
    report = replay_csv(tmp_path / "d.csv", url=fake.url, label_column="y", progress=False)
    assert len(fake.feedbacks) == 2
    assert fake.feedbacks[0] == fake.feedbacks[1]
    assert fake.feedback_times[1] - fake.feedback_times[0] >= 0.95  # Retry-After: 1
    assert (report.accepted, report.errors) == (16, {})


def test_main_reports_json_and_sends_int_labels(
    fake: FakeMnemo,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_csv(tmp_path / "d.csv", 20)
    fake.int_labels = True
    monkeypatch.setenv("MNEMO_URL", fake.url)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            *(str(tmp_path / "d.csv"), "--label-column", "y", "--label-type", "int"),
            *("--limit", "18", "--batch-size", "5", "--json", "--quiet"),
        ]
    )
    assert main(args) == 0
    out, err = capsys.readouterr()
    report = ReplayReport(**json.loads(out))
    assert (report.rows, report.accepted) == (18, 18)
    assert report.accuracy == pytest.approx(14 / 18)
    assert [len(p["inputs"]) for p in fake.predicts] == [5, 5, 5, 3]
    assert all(type(i["label"]) is int for fb in fake.feedbacks for i in fb["items"])
    assert "\r" not in err and "replayed 18 rows" in err


def test_errors_give_exit_code_1_and_progress_bar_draws(
    fake: FakeMnemo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_csv(tmp_path / "d.csv", 40)
    fake.predict_statuses = [500]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([str(tmp_path / "d.csv"), "--label-column", "y", "--url", fake.url])
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("\r[")
    assert "40/40 rows" in err and "errors 1" in err and "500×1" in err
    assert len(fake.feedbacks) == 2  # the failed chunk's labels are not sent


def test_a_refused_token_or_no_server_stops_the_replay(
    fake: FakeMnemo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_csv(tmp_path / "d.csv", 40)
    fake.feedback_statuses = [401]  # every later request would be refused the same way
    report = replay_csv(tmp_path / "d.csv", url=fake.url, label_column="y", progress=False)
    assert (report.rows, report.errors, len(fake.predicts)) == (16, {401: 1}, 1)
    monkeypatch.setattr(replay_client, "MAX_RETRIES", 0)
    report = replay_csv(tmp_path / "d.csv", url=f"http://127.0.0.1:{free_port()}", label_column="y",
                        progress=False)
    assert (report.rows, report.errors) == (0, {0: 1})  # no answer at all, to the schema read


def test_an_answer_outside_the_contract_is_reported(fake: FakeMnemo, tmp_path: Path) -> None:
    write_csv(tmp_path / "d.csv", 4)
    fake.predict_statuses = [200]  # a 200 whose body has no predictions
    with pytest.raises(replay_client.ReplayError, match="unexpected answer"):
        replay_csv(tmp_path / "d.csv", url=fake.url, label_column="y", progress=False)


def test_bad_csv_is_reported(fake: FakeMnemo, tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("x0,y\n1,a\nfoo,b\n")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([str(tmp_path / "d.csv"), "--label-column", "nope", "--url", fake.url])
    assert main(args) == 1
    args.label_column = "y"
    assert main(args) == 1  # "foo" is not a number


def test_digits_csv_splits(tmp_path: Path) -> None:
    sizes = {s: write_digits_csv(tmp_path / f"{s}.csv", split=s) for s in ("train", "test", "all")}
    assert sizes == {"train": 1437, "test": 360, "all": 1797}
    with (tmp_path / "test.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [*(f"p{i}" for i in range(64)), "y"]
    assert {r["y"] for r in rows} == {str(d) for d in range(10)}  # stratified: every class
    assert write_digits_csv(tmp_path / "again.csv", split="test") == 360
    assert (tmp_path / "again.csv").read_text() == (tmp_path / "test.csv").read_text()


# -- records under a feature schema (MNEMO_FEATURES) -----------------------------------------

SCHEMA = {"x0": "numeric", "amount": "numeric", "country": "categorical", "mobile": "boolean"}


def write_records_csv(path: Path, *, extra: bool = False) -> None:
    """Columns in another order than the schema's, booleans in every accepted spelling, empty
    cells (missing values) and, with `extra`, a column the schema lacks."""
    lines = ["amount,y,country,mobile,x0" + (",note" if extra else "")]
    rows = [("12.5", "1", "FR", "TRUE", "1"), ("", "0", "DE", "no", "2"), (" -3 ", "1", "", "1", "3"),
            ("4", "0", "IT", "Yes", ""), ("0.25", "1", "FR", "0", "5"), ("1e3", "0", " ES ", "", "6"),
            ("7", "1", "DE", "false", "7")]
    for i, row in enumerate(rows):
        lines.append(",".join(row) + (f",n{i}" if extra else ""))
    path.write_text("\n".join(lines) + "\n")


EXPECTED_RECORDS = [
    {"amount": 12.5, "country": "FR", "mobile": True, "x0": 1.0},
    {"country": "DE", "mobile": False, "x0": 2.0},
    {"amount": -3.0, "mobile": True, "x0": 3.0},
    {"amount": 4.0, "country": "IT", "mobile": True},
    {"amount": 0.25, "country": "FR", "mobile": False, "x0": 5.0},
    {"amount": 1000.0, "country": "ES", "x0": 6.0},
    {"amount": 7.0, "country": "DE", "mobile": False, "x0": 7.0},
]


def test_records_are_read_by_name_with_the_servers_schema(fake: FakeMnemo, tmp_path: Path) -> None:
    write_records_csv(tmp_path / "d.csv")
    fake.features = SCHEMA
    report = replay_csv(tmp_path / "d.csv", url=fake.url, label_column="y", batch_size=4,
                        progress=False)
    assert fake.version_reads == 1
    assert [r for p in fake.predicts for r in p["inputs"]] == EXPECTED_RECORDS
    assert [type(v) for v in fake.predicts[0]["inputs"][0].values()] == [float, str, bool, float]
    items = [i for fb in fake.feedbacks for i in fb["items"]]
    assert [i["label"] for i in items] == ["1", "0", "1", "0", "1", "0", "1"]
    assert all("prediction_id" in i for i in items)
    # rows x0 = 1, 3, 5, 7 say "1" and x0 = 2, 6 say "0": right; x0 absent (row 4) predicts 0
    assert (report.rows, report.predicted, report.accepted, report.errors) == (7, 7, 7, {})
    assert report.accuracy == pytest.approx(7 / 7)


def test_unlogged_records_are_labelled_with_their_records(fake: FakeMnemo, tmp_path: Path) -> None:
    write_records_csv(tmp_path / "d.csv")
    fake.features, fake.logged = SCHEMA, False
    report = replay_csv(tmp_path / "d.csv", url=fake.url, label_column="y", progress=False)
    items = fake.feedbacks[0]["items"]
    assert [i["inputs"] for i in items] == EXPECTED_RECORDS
    assert all(i["feedback_id"].endswith(f"-{n}") for n, i in enumerate(items, start=1))
    assert report.accepted == 7


def test_columns_outside_the_schema_are_refused_unless_ignored(fake: FakeMnemo, tmp_path: Path) -> None:
    write_records_csv(tmp_path / "d.csv", extra=True)
    fake.features = SCHEMA
    with pytest.raises(ReplayError, match=r"column\(s\) 'note' are not fields of the schema"):
        replay_csv(tmp_path / "d.csv", url=fake.url, label_column="y", progress=False)
    assert fake.predicts == []  # refused before anything was sent
    for options in ({"ignore_columns": ["note"]}, {"ignore_extra_columns": True}):
        fake.predicts.clear()
        report = replay_csv(tmp_path / "d.csv", url=fake.url, label_column="y", progress=False,
                            **options)  # type: ignore[arg-type]
        assert [r for p in fake.predicts for r in p["inputs"]] == EXPECTED_RECORDS
        assert (report.accepted, report.errors) == (7, {})
    with pytest.raises(ReplayError, match="no column 'nope'"):
        replay_csv(tmp_path / "d.csv", url=fake.url, label_column="y", progress=False,
                   ignore_columns=["nope"])
    # Ignoring a field's column leaves the field missing in every row.
    fake.predicts.clear()
    replay_csv(tmp_path / "d.csv", url=fake.url, label_column="y", progress=False,
               ignore_columns=["note", "country"])
    assert all("country" not in r for p in fake.predicts for r in p["inputs"])
    with pytest.raises(ReplayError, match="required field\\(s\\) 'country'"):
        replay_csv(tmp_path / "d.csv", url=fake.url, label_column="y", progress=False,
                   ignore_columns=["note", "country"],
                   features=FeatureSchema.from_mapping({**SCHEMA, "country": {
                       "kind": "categorical", "required": True}}))


@pytest.mark.parametrize(("column", "cell", "message"), [
    ("mobile", "maybe", "column 'mobile': 'maybe' is not a boolean (true/false, 1/0 or yes/no"),
    ("amount", "12,5", "column 'amount': '12,5' is not a number"),
    ("amount", "inf", "column 'amount': field 'amount': inf is not a finite number"),
    ("country", "x" * 300, "column 'country': field 'country': values are at most 256"),
])
def test_a_bad_cell_names_its_line_and_column(fake: FakeMnemo, tmp_path: Path, column: str,
                                              cell: str, message: str) -> None:
    header = ["x0", "amount", "country", "mobile", "y"]
    rows = [["1", "2", "FR", "true", "1"] for _ in range(5)]
    rows[3][header.index(column)] = f'"{cell}"'
    (tmp_path / "d.csv").write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")
    fake.features = SCHEMA
    with pytest.raises(ReplayError) as raised:
        replay_csv(tmp_path / "d.csv", url=fake.url, label_column="y", batch_size=2, progress=False)
    assert str(raised.value).startswith(f"{tmp_path / 'd.csv'}:5: {message}")
    assert [len(p["inputs"]) for p in fake.predicts] == [2]  # the bad row's chunk is not sent


def test_features_option_takes_json_or_a_path_and_skips_the_server(
    fake: FakeMnemo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_records_csv(tmp_path / "d.csv")
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    for given in (json.dumps(SCHEMA), str(tmp_path / "schema.json")):
        fake.predicts.clear()
        args = parser.parse_args([str(tmp_path / "d.csv"), "--label-column", "y", "--url", fake.url,
                                  "--features", given, "--quiet"])
        assert main(args) == 0
        assert [r for p in fake.predicts for r in p["inputs"]] == EXPECTED_RECORDS
    assert fake.version_reads == 0  # the server reports no schema, and was not asked
    with pytest.raises(SystemExit):
        parser.parse_args([str(tmp_path / "d.csv"), "--label-column", "y", "--features",
                           str(tmp_path / "absent.json")])
    assert "neither a JSON object nor a readable file" in capsys.readouterr().err


def test_a_vector_server_gets_every_column_but_the_ignored_ones(fake: FakeMnemo, tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("id,x0,x1,y\nr1,1,2,1\nr2,3,4,0\n")
    replay_csv(tmp_path / "d.csv", url=fake.url, label_column="y", progress=False,
               ignore_columns=["id"])
    assert fake.predicts[0]["inputs"] == [[1.0, 2.0], [3.0, 4.0]]


@pytest.fixture
def api_server(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., str]]:
    """The real API (its lifespan included, real Redis) served by uvicorn in a thread."""
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(**overrides: Any) -> str:
        settings = make_settings(host="127.0.0.1", port=free_port(), **overrides)
        server = uvicorn.Server(uvicorn_config(settings, create_app(settings)))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        running.append((server, thread))
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{settings.port}"

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(15)


def test_records_replay_through_the_real_api(
    api_server: Callable[..., str], tmp_path: Path, redis_client: redis.Redis, model_name: str
) -> None:
    url = api_server(features=json.dumps(SCHEMA), input_dim=None, labels=["0", "1"])
    write_records_csv(tmp_path / "d.csv", extra=True)
    report = replay_csv(tmp_path / "d.csv", url=url, label_column="y", batch_size=3,
                        progress=False, ignore_extra_columns=True)
    assert (report.rows, report.predicted, report.accepted, report.errors) == (7, 7, 7, {})
    stream = [json.loads(fields[b"x"]) for _, fields in redis_client.xrange(Keys(model_name).stream)]
    assert stream == EXPECTED_RECORDS  # the server stored the records the file holds
