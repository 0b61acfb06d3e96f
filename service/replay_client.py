"""`python -m service replay FILE.csv`: stream a labelled CSV through a running Mnemo API.

Each chunk is predicted first and labelled after (prequential), so the running accuracy is
what a live application would have seen.

A deployment with a feature schema (MNEMO_FEATURES) takes records: columns are then read by name
as the schema's fields (numbers, strings, true/false; an empty cell is a missing value). The
schema is the one the server reports for the model (its current version's
`architecture.features`) unless `--features` gives one.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from mnemo_client import ByPrediction, Client, ConflictError, MnemoError, ResponseError, WithInputs
from models.features import BOOLEAN, NUMERIC, FeatureSchema, FieldSpec, RecordError, SchemaError

DEFAULT_URL = "http://127.0.0.1:8000"
MAX_RETRIES = 5  # per request, for 429/503 and unreachable server
# Per request, its retries included: a Retry-After that would end later gives up at once
# (counted as that status) instead of stalling the replay.
DEADLINE_SECONDS = 300.0
TRANSPORT_ERROR = 0  # the `errors` key for requests that got no HTTP answer
# Every later request would fail the same way: stop instead of repeating the error.
FATAL_STATUSES = frozenset({401, 403, 404})

Label = str | int
Inputs = list[float] | dict[str, float | str | bool]  # a vector, or a record under a schema
TRUE_CELLS = frozenset({"true", "1", "yes"})  # boolean cells, case-insensitive
FALSE_CELLS = frozenset({"false", "0", "no"})


class ReplayError(Exception):
    """The file cannot be replayed (bad CSV, or an answer outside the v1 contract)."""


@dataclass
class ReplayReport:
    rows: int = 0
    predicted: int = 0
    accepted: int = 0
    duplicates: int = 0
    errors: dict[int, int] = field(default_factory=dict)  # HTTP status (0: none) → requests
    accuracy: float | None = None  # over predicted rows only
    seconds: float = 0.0
    rows_per_second: float = 0.0
    unpredicted: int = 0  # rows labelled without a prediction (409: no class yet)


@dataclass(frozen=True)
class _Row:
    number: int  # 1-based data row, for feedback ids
    features: Inputs
    label: Label
    tag: str | None


# -- CSV -----------------------------------------------------------------------------------


def _read_rows(path: Path, label_column: str, tag_column: str | None, label_type: str,
               schema: FeatureSchema | None = None, ignore_columns: Sequence[str] = (),
               ignore_extra_columns: bool = False) -> Iterator[_Row]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [name.strip() for name in next(reader, [])]
        if not header:
            raise ReplayError(f"{path}: empty file")
        label_at = _column(header, label_column, path)
        tag_at = _column(header, tag_column, path) if tag_column is not None else None
        skipped = {label_at, tag_at, *(_column(header, name, path) for name in ignore_columns)}
        feature_at = [i for i in range(len(header)) if i not in skipped]
        if schema is not None:
            yield from _read_records(reader, path, header, feature_at, label_at, tag_at,
                                     label_type, schema, ignore_extra_columns)
            return
        if not feature_at:
            raise ReplayError(f"{path}: no feature columns besides the label/tag")
        number = 0
        for record in reader:
            if not record:
                continue  # blank line
            number += 1
            where = f"{path}:{reader.line_num}"
            if len(record) != len(header):
                raise ReplayError(f"{where}: {len(record)} fields, header has {len(header)}")
            tag = (record[tag_at].strip() or None) if tag_at is not None else None
            yield _Row(
                number=number,
                features=[_number(record[i], header[i], where) for i in feature_at],
                label=_label(record[label_at], label_type, where),
                tag=tag,
            )


def _read_records(reader: Any, path: Path, header: list[str], feature_at: list[int], label_at: int,
                  tag_at: int | None, label_type: str, schema: FeatureSchema,
                  ignore_extra_columns: bool) -> Iterator[_Row]:
    """Rows as records: each schema field's column by name, the other columns refused (or
    skipped with `ignore_extra_columns`); a field without a column is missing in every row."""
    extra = [header[i] for i in feature_at if header[i] not in schema]
    if extra and not ignore_extra_columns:
        raise ReplayError(
            f"{path}: column(s) {', '.join(map(repr, extra))} are not fields of the schema "
            f"({', '.join(f.name for f in schema.fields)}); skip them with --ignore-column "
            "NAME, or every such column with --ignore-extra-columns")
    fields = [(i, schema[header[i]]) for i in feature_at if header[i] in schema]
    names = [spec.name for _, spec in fields]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ReplayError(f"{path}: column(s) {', '.join(map(repr, twice))} appear more than once")
    absent = [f.name for f in schema.fields if f.required and f.name not in names]
    if absent:
        raise ReplayError(f"{path}: no column for the required field(s) "
                          f"{', '.join(map(repr, absent))}")
    number = 0
    for cells in reader:
        if not cells:
            continue  # blank line
        number += 1
        where = f"{path}:{reader.line_num}"
        if len(cells) != len(header):
            raise ReplayError(f"{where}: {len(cells)} fields, header has {len(header)}")
        record: dict[str, float | str | bool] = {}
        for i, spec in fields:
            cell = cells[i].strip()
            if cell:  # an empty cell is a missing value: the field is left out
                record[spec.name] = _cell(spec, cell, where)
        try:
            checked = schema.check(record)  # the server's own rules (range, length, required)
        except RecordError as exc:
            raise ReplayError(f"{where}: column {exc.field!r}: {exc}") from None
        tag = (cells[tag_at].strip() or None) if tag_at is not None else None
        yield _Row(number=number, features=checked,
                   label=_label(cells[label_at], label_type, where), tag=tag)


def _cell(spec: FieldSpec, cell: str, where: str) -> float | str | bool:
    """A non-empty cell as its field's kind of value."""
    if spec.kind == NUMERIC:
        try:
            return float(cell)
        except ValueError:
            raise ReplayError(f"{where}: column {spec.name!r}: {cell!r} is not a number") from None
    if spec.kind == BOOLEAN:
        lowered = cell.lower()
        if lowered in TRUE_CELLS:
            return True
        if lowered in FALSE_CELLS:
            return False
        raise ReplayError(f"{where}: column {spec.name!r}: {cell!r} is not a boolean (true/false, "
                          "1/0 or yes/no, any case)")
    return cell


def _column(header: list[str], name: str, path: Path) -> int:
    try:
        return header.index(name)
    except ValueError:
        raise ReplayError(f"{path}: no column {name!r} (columns: {header})") from None


def _number(cell: str, column: str, where: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise ReplayError(f"{where}: column {column!r}: {cell!r} is not a number") from None
    if not math.isfinite(value):  # JSON cannot carry it and the API refuses it
        raise ReplayError(f"{where}: column {column!r}: {cell!r} is not finite")
    return value


def _label(cell: str, label_type: str, where: str) -> Label:
    cell = cell.strip()
    if label_type == "str":
        return cell
    try:
        return int(cell)
    except ValueError:
        raise ReplayError(f"{where}: label {cell!r} is not an integer") from None


def _count_rows(path: Path) -> int | None:
    """Data rows by counting newlines (fast; only sizes the progress bar)."""
    try:
        with path.open("rb") as f:
            lines, last = 0, b"\n"
            while block := f.read(1 << 20):
                lines += block.count(b"\n")
                last = block[-1:]
    except OSError:
        return None
    return max(0, lines + (last != b"\n") - 1)


def _chunks(rows: Iterable[_Row], size: int) -> Iterator[list[_Row]]:
    it = iter(rows)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _by_tag(chunk: list[_Row]) -> Iterator[tuple[str | None, list[_Row]]]:
    # predict takes one tag per request; keep first-seen order.
    groups: dict[str | None, list[_Row]] = {}
    for row in chunk:
        groups.setdefault(row.tag, []).append(row)
    yield from groups.items()


# -- the replay loop -----------------------------------------------------------------------


class _Tally:
    def __init__(self) -> None:
        self.report = ReplayReport()
        self.correct = 0
        self.started = time.monotonic()

    def error(self, status: int) -> None:
        self.report.errors[status] = self.report.errors.get(status, 0) + 1

    def finish(self) -> ReplayReport:
        r = self.report
        r.seconds = time.monotonic() - self.started
        r.rows_per_second = r.rows / r.seconds if r.seconds > 0 else 0.0
        r.accuracy = self.correct / r.predicted if r.predicted else None
        return r


def _feedback_items(rows: list[_Row], tag: str | None, ids: list[str] | None,
                    run: str) -> list[ByPrediction | WithInputs]:
    if ids is not None:
        return [ByPrediction(pid, row.label, tag) for pid, row in zip(ids, rows, strict=True)]
    # Our own feedback ids (rather than the client's uuid4s) name the run and row.
    return [WithInputs(row.features, row.label, tag, f"{run}-{row.number}") for row in rows]


def _refused(tally: _Tally, exc: MnemoError) -> bool:
    """Count a request that failed (after the client's retries); False when the replay must
    stop: no answer at all, or a refusal every later request would get too."""
    if isinstance(exc, ResponseError):
        raise ReplayError(str(exc)) from exc
    tally.error(exc.status if exc.status is not None else TRANSPORT_ERROR)
    return exc.status is not None and exc.status not in FATAL_STATUSES


def _replay_group(client: Client, rows: list[_Row], tag: str | None, tally: _Tally, run: str) -> bool:
    """Predict then label one single-tag group; False when the replay must stop."""
    report = tally.report
    report.rows += len(rows)
    ids: list[str] | None = None
    try:
        answer = client.predict([row.features for row in rows], tag=tag)
    except ConflictError:  # no class yet: the labels still teach the model
        report.unpredicted += len(rows)
    except MnemoError as exc:
        return _refused(tally, exc)
    else:
        if len(answer) != len(rows):
            raise ReplayError(f"predict answered {len(rows)} rows with {len(answer)} predictions")
        report.predicted += len(rows)
        tally.correct += sum(p.label == row.label for p, row in zip(answer, rows, strict=True))
        # "logged": false (Redis was down at predict time): the ids cannot be resolved.
        if answer.logged:
            ids = answer.ids
    try:
        result = client.feedback(_feedback_items(rows, tag, ids, run))
    except MnemoError as exc:
        return _refused(tally, exc)
    report.accepted += result.accepted
    report.duplicates += result.duplicates
    return True


def replay_csv(
    path: Path,
    *,
    url: str,
    label_column: str,
    tag_column: str | None = None,
    batch_size: int = 16,
    token: str | None = None,
    label_type: str = "str",
    limit: int | None = None,
    progress: bool = True,
    model: str | None = None,
    features: FeatureSchema | str | None = None,
    ignore_columns: Sequence[str] = (),
    ignore_extra_columns: bool = False,
) -> ReplayReport:
    """Replay `path` through the API at `url` (to `model`, where it serves several): predict
    each chunk, then send its labels.

    `features` (a schema, or MNEMO_FEATURES's JSON or file path) makes rows records; None: the
    schema the server reports for the model (its current version's `architecture.features`),
    vectors where it has none. `ignore_columns` are never sent; `ignore_extra_columns` skips
    the columns a schema lacks instead of refusing the file."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if label_type not in ("str", "int"):
        raise ValueError("label_type must be 'str' or 'int'")
    path = Path(path)
    schema: FeatureSchema | None = None
    if features is not None:
        try:
            schema = FeatureSchema.load(features)
        except SchemaError as exc:
            raise ReplayError(f"--features: {exc}") from None
    bar: _ProgressBar | None = None
    if progress:
        total = _count_rows(path)
        bar = _ProgressBar(min(total, limit) if total is not None and limit else total)
    run = f"replay-{uuid.uuid4().hex[:12]}"
    tally = _Tally()
    try:
        with Client(url, token=token, timeout=30.0, retries=MAX_RETRIES,
                    deadline=DEADLINE_SECONDS, model=model) as client:
            if features is None:
                try:
                    schema = _server_schema(client)
                except MnemoError as exc:
                    _refused(tally, exc)
                    return tally.report  # the finally block completes it
            rows: Iterable[_Row] = _read_rows(path, label_column, tag_column, label_type, schema,
                                              ignore_columns, ignore_extra_columns)
            if limit is not None:
                rows = itertools.islice(rows, limit)
            for chunk in _chunks(rows, batch_size):
                go_on = all(_replay_group(client, g, t, tally, run) for t, g in _by_tag(chunk))
                if bar is not None:
                    bar.draw(tally)
                if not go_on:
                    break
    finally:
        report = tally.finish()
        if bar is not None:
            bar.draw(tally, final=True)
    return report


def _server_schema(client: Client) -> FeatureSchema | None:
    """The schema of the model's current version (None: it takes vectors)."""
    version = client.version()
    architecture = version.raw.get("architecture")
    features = architecture.get("features") if isinstance(architecture, dict) else None
    if features is None:
        return None
    try:
        return FeatureSchema.from_mapping(features)
    except SchemaError as exc:
        raise ReplayError(f"the server's feature schema (version {version.version}): {exc}; "
                          "give one with --features") from None


# -- progress and CLI ----------------------------------------------------------------------


class _ProgressBar:
    """One `\\r`-rewritten line on stderr, redrawn at most ~5 times a second."""

    WIDTH = 24
    INTERVAL = 0.2

    def __init__(self, total: int | None, stream: TextIO | None = None) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.last_draw = -math.inf
        self.last_len = 0

    def draw(self, tally: _Tally, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last_draw < self.INTERVAL:
            return
        self.last_draw = now
        r = tally.report
        elapsed = now - tally.started
        parts = []
        if self.total:
            done = min(r.rows / self.total, 1.0)
            filled = round(done * self.WIDTH)
            parts.append(f"[{'#' * filled}{'-' * (self.WIDTH - filled)}] {done:4.0%}")
            parts.append(f"{r.rows}/{self.total} rows")
        else:
            parts.append(f"{r.rows} rows")
        acc = f"{tally.correct / r.predicted:.3f}" if r.predicted else "-"
        parts.append(f"acc {acc}")
        parts.append(f"{r.rows / elapsed if elapsed > 0 else 0:.0f} rows/s")
        parts.append(f"errors {sum(r.errors.values())}")
        line = "  ".join(parts)
        self.stream.write("\r" + line + " " * max(0, self.last_len - len(line)))
        self.last_len = len(line)
        if final:
            self.stream.write("\n")
        self.stream.flush()


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _features(text: str) -> FeatureSchema:
    try:
        return FeatureSchema.load(text)
    except SchemaError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `replay` subcommand's arguments."""
    parser.description = (
        "Stream a labelled CSV through a running Mnemo API: predict each chunk of rows, then "
        "send their labels. Every column but the label (and tag) column is an input. For a "
        "vector deployment a row is the numbers of those columns in file order; for one with "
        "a feature schema (MNEMO_FEATURES) a row is a record: each column is read by name as "
        "the schema's field (numeric: a number; categorical: the text; boolean: true/false, "
        "1/0 or yes/no, any case), an empty cell is a missing value, a field with no column is "
        "missing in every row, and a column the schema lacks is an error unless ignored. The "
        "schema is the one the server reports for the model unless --features gives it. A bad "
        "cell stops the replay at its line (the rows before it were sent).")
    parser.add_argument("file", type=Path, metavar="FILE.csv", help="CSV with a header row")
    parser.add_argument("--label-column", required=True, help="column holding the true label")
    parser.add_argument("--tag-column", help="column holding the tag (not a feature)")
    parser.add_argument("--ignore-column", action="append", default=[], metavar="NAME",
                        help="a column to leave out of the inputs (repeatable)")
    parser.add_argument("--features", type=_features, metavar="JSON|PATH",
                        help="the deployment's feature schema, as MNEMO_FEATURES takes it (a JSON "
                        "object or a file holding one; e.g. --features \"$MNEMO_FEATURES\"); "
                        "default: the schema the server reports for the model (its current "
                        "version's architecture.features), none meaning vectors")
    parser.add_argument("--ignore-extra-columns", action="store_true",
                        help="with a schema: skip the columns that are not its fields instead "
                        "of refusing the file")
    parser.add_argument("--url", help=f"Mnemo API (default: $MNEMO_URL or {DEFAULT_URL})")
    parser.add_argument("--token", help="API token (default: $MNEMO_API_TOKEN)")
    parser.add_argument("--model", help="the model to replay to, where the deployment serves "
                        "several (MNEMO_MODELS); default: its default model")
    parser.add_argument("--batch-size", type=_positive_int, default=16, help="rows per request")
    parser.add_argument("--limit", type=_positive_int, metavar="N", help="replay N rows at most")
    parser.add_argument("--label-type", choices=("str", "int"), default="str")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")


def main(args: argparse.Namespace) -> int:
    """Run `replay`; exit code 0 when every request succeeded, else 1."""
    try:
        report = replay_csv(
            args.file,
            url=args.url or os.environ.get("MNEMO_URL") or DEFAULT_URL,
            label_column=args.label_column,
            tag_column=args.tag_column,
            batch_size=args.batch_size,
            token=args.token or os.environ.get("MNEMO_API_TOKEN") or None,
            label_type=args.label_type,
            limit=args.limit,
            progress=not args.quiet,
            model=args.model,
            features=args.features,
            ignore_columns=args.ignore_column,
            ignore_extra_columns=args.ignore_extra_columns,
        )
    except (ReplayError, OSError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 1
    acc = f"{report.accuracy:.4f}" if report.accuracy is not None else "n/a"
    errors = ", ".join(f"{k or 'no answer'}×{v}" for k, v in sorted(report.errors.items()))
    print(
        f"replayed {report.rows} rows in {report.seconds:.1f} s "
        f"({report.rows_per_second:.0f} rows/s): accuracy {acc} over {report.predicted} "
        f"predicted, {report.unpredicted} unpredicted; accepted {report.accepted}, "
        f"duplicates {report.duplicates}; errors: {errors or 'none'}",
        file=sys.stderr,
    )
    if args.json:
        print(json.dumps(asdict(report)), flush=True)
    return 0 if not report.errors else 1
