"""``driftloop publish annotations FILE``: a producer for upstream systems, demos and history.

JSON lines (``.jsonl`` or any other name) are sent as today, one ``AnnotationSubmitted`` per
line. A table (``.csv``, ``.tsv``, ``.parquet``, ``.pq``) is read against the model's spec: each
feature is the column of the same name (or the column :func:`services.spec_init.feature_name`
renames to it), the label, record id, confidence, annotator and inference id are columns named
by flags with defaults (:class:`TableColumns`); the file's other columns are ignored and
counted. Files are streamed in record batches, never loaded whole.

Cells are converted to the spec's types, not guessed: a CSV has no types of its own, and a
numeric column read as text because of one bad cell must not silently turn into categories.
Every needed CSV column is read as text and converted per feature type (:func:`numbers`,
:func:`categories`, :func:`flags`): numbers as float64, categories as text (an integer code as
its digits), flags from true / false / 1 / 0. A cell that cannot be converted makes its row
invalid, reported with its row number and not sent, as an invalid JSON line is; empty cells,
nulls and NaN are missing values. What is sent, ingest then judges by the spec's rules (range,
declared categories, missing values), as for any annotation.
"""

from __future__ import annotations

import asyncio
import csv
import math
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from services.spec_init import SAMPLE_ROWS, feature_name
from shared import topics
from shared.bus import KafkaOptions, Publisher, confirm
from shared.errors import InvalidInput
from shared.events import SCHEMA_VERSION, AnnotationSubmitted, describe_validation_error, encode_event, utc_now
from shared.features import BOOLEAN, CATEGORICAL, category_text
from shared.spec import ModelSpec

BATCH = 1000
"""Records confirmed together."""
WINDOW_BATCHES = 20
"""Batches in flight before the oldest is confirmed: the producer's batches stay full while the
memory held for unconfirmed records stays bounded (``BATCH * WINDOW_BATCHES`` records)."""
TABLE_BATCH_ROWS = 10_000
"""Rows read from a table at a time (Parquet); a CSV is read in blocks of :data:`CSV_BLOCK_BYTES`."""
CSV_BLOCK_BYTES = 4 << 20
MAX_REPORTED_ERRORS = 20
MAX_RECORD_ID = 256
_SOURCE_ID_CHARS = 200
DELIMITERS: Final = {".csv": ",", ".tsv": "\t"}
PARQUET_SUFFIXES: Final = frozenset({".parquet", ".pq"})
_TRUE: Final = frozenset({"true", "1"})
_FALSE: Final = frozenset({"false", "0"})

FileKind = Literal["jsonl", "csv", "parquet"]


def file_kind(path: Path) -> FileKind:
    """How a file is read, by its extension: a table (CSV, TSV, Parquet), else JSON lines.

    >>> file_kind(Path("a.CSV")), file_kind(Path("a.parquet")), file_kind(Path("a.jsonl"))
    ('csv', 'parquet', 'jsonl')
    """
    suffix = path.suffix.lower()
    if suffix in DELIMITERS:
        return "csv"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    return "jsonl"


# --- reading tables ----------------------------------------------------------------------------


def _header(path: Path) -> list[str]:
    """A CSV's column names (its first row), read without reading the rest."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            names = next(csv.reader(handle, delimiter=DELIMITERS[path.suffix.lower()]), None)
    except OSError as err:
        raise InvalidInput(f"cannot read {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{path} is not UTF-8 text; export the CSV as UTF-8") from None
    if not names:
        raise InvalidInput(f"{path} is empty: a CSV needs a header row naming its columns")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InvalidInput(f"{path}: columns named more than once: {', '.join(repeated)}; rename them")
    return names


def _parquet(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except OSError as err:
        raise InvalidInput(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from None
    except pa.ArrowInvalid as err:
        raise InvalidInput(f"{path} is not a Parquet file: {err}") from None


def table_columns(path: Path) -> list[str]:
    """The column names of a CSV or Parquet file."""
    if file_kind(path) == "csv":
        return _header(path)
    return list(_parquet(path).schema_arrow.names)


def _csv_batches(path: Path, columns: list[str], position: list[int]) -> Iterator[pa.RecordBatch]:
    """A CSV's ``columns`` as text, batch by batch; ``position[0]`` follows the bytes read."""
    header = _header(path)
    read = pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES)
    parse = pacsv.ParseOptions(delimiter=DELIMITERS[path.suffix.lower()])
    convert = pacsv.ConvertOptions(
        column_types={c: pa.string() for c in header}, include_columns=columns, strings_can_be_null=True
    )
    with path.open("rb") as handle:
        try:
            reader = pacsv.open_csv(handle, read_options=read, parse_options=parse, convert_options=convert)
            for batch in reader:
                position[0] = handle.tell()
                yield batch
        except pa.ArrowInvalid as err:
            raise InvalidInput(f"{path} is not a valid CSV: {err}") from None


def table_batches(path: Path, columns: list[str], position: list[int] | None = None) -> Iterator[pa.RecordBatch]:
    """``columns`` of a CSV or Parquet file, streamed in record batches (CSV cells as text)."""
    position = position if position is not None else [0]
    if file_kind(path) == "csv":
        yield from _csv_batches(path, columns, position)
        return
    parquet = _parquet(path)
    done = 0
    for batch in parquet.iter_batches(batch_size=TABLE_BATCH_ROWS, columns=columns):
        done += batch.num_rows
        position[0] = done
        yield batch


def read_sample(path: Path, rows: int = SAMPLE_ROWS) -> tuple[pa.Table, int | None]:
    """The first ``rows`` rows of a table, and its row count when known without reading it all.

    A CSV's cells are text (:func:`services.spec_init.infer_spec` reads the numbers in them);
    a Parquet file keeps its types and knows its row count from its footer.
    """
    columns = table_columns(path)
    batches: list[pa.RecordBatch] = []
    taken = 0
    for batch in table_batches(path, columns):
        batches.append(batch.slice(0, rows - taken))
        taken += batches[-1].num_rows
        if taken >= rows:
            break
    if file_kind(path) == "parquet":
        total: int | None = _parquet(path).metadata.num_rows
        schema = _parquet(path).schema_arrow
    else:
        total = None if taken >= rows else taken
        schema = pa.schema([(c, pa.string()) for c in columns])
    return pa.Table.from_batches(batches, schema=schema), total


# --- cells to the spec's types -----------------------------------------------------------------

Converted = tuple[list[Any], dict[int, str]]
"""A column's values in their event form, and the rows whose cell could not be converted (why)."""


def _plain(array: pa.Array) -> pa.Array:
    return array.dictionary_decode() if pa.types.is_dictionary(array.type) else array


def _text_of(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:39] + "…"


def numbers(array: pa.Array, what: str) -> Converted:
    """A column as numbers: floats, None where missing (null, empty, NaN).

    >>> numbers(pa.array(["1.5", " 2", None, "", "x"]), "income")
    ([1.5, 2.0, None, None, None], {4: "income: 'x' is not a number"})
    >>> numbers(pa.array([1, None, 3]), "n")
    ([1.0, None, 3.0], {})
    """
    array = _plain(array)
    kind = array.type
    if pa.types.is_boolean(kind) or pa.types.is_integer(kind) or pa.types.is_decimal(kind):
        return array.cast(pa.float64()).to_pylist(), {}
    if pa.types.is_floating(kind):
        floats = array.cast(pa.float64())
        if pc.any(pc.is_nan(floats)).as_py():
            floats = pc.if_else(pc.is_nan(floats), pa.scalar(None, pa.float64()), floats)
        return floats.to_pylist(), {}
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        try:
            return numbers(pc.cast(pc.utf8_trim_whitespace(array), pa.float64()), what)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass  # a bad cell (or an empty one): cell by cell, to name the rows
    values: list[Any] = []
    bad: dict[int, str] = {}
    for row, cell in enumerate(array.to_pylist()):
        if cell is None or (isinstance(cell, str) and not cell.strip()):
            values.append(None)
            continue
        try:
            number = float(cell)
        except (TypeError, ValueError):
            bad[row] = f"{what}: {_text_of(cell)!r} is not a number"
            values.append(None)
            continue
        values.append(None if math.isnan(number) else number)
    return values, bad


def categories(array: pa.Array, what: str) -> Converted:
    """A column as categories: text (an integer code as its digits), None where missing.

    >>> categories(pa.array([3, None]), "branch"), categories(pa.array([1.0, 2.5]), "code")
    ((['3', None], {}), (['1', None], {1: 'code: 2.5 is not a category (text or an integer code)'}))
    """
    array = _plain(array)
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return [cell or None for cell in array.to_pylist()], {}
    if pa.types.is_integer(kind):
        return array.cast(pa.string()).to_pylist(), {}
    values: list[Any] = []
    bad: dict[int, str] = {}
    for row, cell in enumerate(array.to_pylist()):
        if cell is None or (isinstance(cell, float) and math.isnan(cell)):
            values.append(None)
            continue
        text = category_text(cell)
        if text is None:
            bad[row] = f"{what}: {_text_of(cell)} is not a category (text or an integer code)"
        values.append(text)
    return values, bad


def flags(array: pa.Array, what: str) -> Converted:
    """A column as booleans: from booleans, 0 / 1, or the text true / false / 1 / 0 (any case).

    >>> flags(pa.array(["TRUE", "0", None, "yes"]), "member")
    ([True, False, None, None], {3: "member: 'yes' is not true or false"})
    """
    array = _plain(array)
    if pa.types.is_boolean(array.type):
        return array.to_pylist(), {}
    values: list[Any] = []
    bad: dict[int, str] = {}
    for row, cell in enumerate(array.to_pylist()):
        if cell is None or (isinstance(cell, float) and math.isnan(cell)) or (isinstance(cell, str) and not cell):
            values.append(None)
            continue
        text = cell.strip().lower() if isinstance(cell, str) else str(int(cell)) if cell in (0, 1) else None
        if text in _TRUE or text in _FALSE:
            values.append(text in _TRUE)
        else:
            bad[row] = f"{what}: {_text_of(cell)!r} is not true or false"
            values.append(None)
    return values, bad


def _class_labels(array: pa.Array, what: str) -> Converted:
    """A classification label: text as it is; integers, integral floats and booleans as integers."""
    array = _plain(array)
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return [cell or None for cell in array.to_pylist()], {}
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        return array.cast(pa.int64()).to_pylist(), {}
    values: list[Any] = []
    bad: dict[int, str] = {}
    for row, cell in enumerate(array.to_pylist()):
        if cell is None or (isinstance(cell, float) and math.isnan(cell)):
            values.append(None)
        elif isinstance(cell, float) and cell.is_integer():
            values.append(int(cell))
        else:
            bad[row] = f"{what}: {_text_of(cell)} is not a class (text or an integer)"
            values.append(None)
    return values, bad


def _texts(array: pa.Array) -> list[Any]:
    array = _plain(array)
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        array = array.cast(pa.string())
    return [cell or None for cell in array.to_pylist()]


# --- columns to annotations --------------------------------------------------------------------


@dataclass(frozen=True)
class TableColumns:
    """Which columns hold the annotation's own fields (``publish annotations``' flags).

    A column named by a flag (in ``given``) must exist; a default one is used when present:
    without a record id column each row's id is derived from the file name and row number,
    without a confidence column it is 1.0.
    """

    label: str = "label"
    record_id: str = "record_id"
    confidence: str = "confidence"
    annotator: str = "annotator"
    inference_id: str = "inference_id"
    given: frozenset[str] = field(default_factory=frozenset)
    """The fields named by a flag rather than by default."""


@dataclass(frozen=True)
class TablePlan:
    """How one file's columns map to one spec: resolved once, before reading rows."""

    spec: ModelSpec
    features: dict[str, str]
    """Spec feature name → the file's column."""
    label: str
    record_id: str | None
    confidence: str | None
    annotator: str | None
    inference_id: str | None
    ignored: list[str]
    """The file's columns that are neither a feature nor an annotation field."""
    absent: list[str]
    """Features that may be missing and have no column: sent as missing."""
    source_id: str
    """What a derived record id starts with (the file's name)."""

    @property
    def columns(self) -> list[str]:
        """The columns read, in the file's terms."""
        fields = [self.label, self.record_id, self.confidence, self.annotator, self.inference_id]
        return list(dict.fromkeys([*self.features.values(), *(c for c in fields if c is not None)]))


def plan_table(spec: ModelSpec, header: list[str], columns: TableColumns, source: str) -> TablePlan:
    """Map a file's columns to ``spec``; refuses with what to do when the file cannot be published.

    >>> from shared.spec import parse_spec
    >>> spec = parse_spec(
    ...     "name: m\\nfeatures: [{name: Sale_Price}, {name: x, allow_missing: true}]\\nlabel: {values: [a, b]}"
    ... )
    >>> plan = plan_table(spec, ["Sale Price", "label", "note"], TableColumns(), "t.csv")
    >>> plan.features, plan.ignored, plan.absent, plan.record_id
    ({'Sale_Price': 'Sale Price'}, ['note'], ['x'], None)
    """
    listed = ", ".join(header)
    by_name = {name: name for name in header}
    renamed: dict[str, list[str]] = {}
    for column in header:
        name = feature_name(column)
        if name is not None and name != column:
            renamed.setdefault(name, []).append(column)

    def field_column(what: str, column: str, flag: str) -> str | None:
        if column in by_name:
            return column
        if what in columns.given:
            raise InvalidInput(f"{source} has no column {column!r} ({flag}); its columns: {listed}")
        return None

    label = field_column("label", columns.label, "--label")
    if label is None:
        raise InvalidInput(
            f"{source} has no label column {columns.label!r}: name it with --label COLUMN; its columns: {listed}"
        )
    fields = {
        "label": label,
        "record_id": field_column("record_id", columns.record_id, "--id"),
        "confidence": field_column("confidence", columns.confidence, "--confidence"),
        "annotator": field_column("annotator", columns.annotator, "--annotator"),
        "inference_id": field_column("inference_id", columns.inference_id, "--inference-id"),
    }
    taken = {c for c in fields.values() if c is not None}
    features: dict[str, str] = {}
    absent: list[str] = []
    missing: list[str] = []
    for feature in spec.features:
        found = feature.name if feature.name in by_name else None
        if found is None and len(renamed.get(feature.name, [])) == 1:
            found = renamed[feature.name][0]
        if found is None or found in taken:
            (absent if feature.allow_missing else missing).append(feature.name)
        else:
            features[feature.name] = found
    if missing:
        raise InvalidInput(
            f"{source} has no column for the features {', '.join(missing)} of {spec.name}, which may not be missing; "
            f"its columns: {listed}"
        )
    used = taken | set(features.values())
    return TablePlan(
        spec=spec,
        features=features,
        label=label,
        record_id=fields["record_id"],
        confidence=fields["confidence"],
        annotator=fields["annotator"],
        inference_id=fields["inference_id"],
        ignored=[c for c in header if c not in used],
        absent=absent,
        source_id=Path(source).name[:_SOURCE_ID_CHARS],
    )


def event_ids(n: int) -> list[str]:
    """``n`` random (version 4) UUIDs as text, drawn in one call rather than one syscall each.

    >>> import uuid
    >>> ids = event_ids(3)
    >>> len(set(ids)), {uuid.UUID(i).version for i in ids}, {uuid.UUID(i).variant for i in ids} == {uuid.RFC_4122}
    (3, {4}, True)
    """
    raw = np.frombuffer(os.urandom(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # the RFC 4122 variant
    text = raw.tobytes().hex()
    return [
        f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}" for h in (text[i : i + 32] for i in range(0, 32 * n, 32))
    ]


@dataclass
class BatchRecords:
    """One batch's annotations as the records sent (JSON, in row order) and its invalid rows (number, why)."""

    values: list[bytes]
    invalid: list[tuple[int, str]]

    def events(self) -> list[AnnotationSubmitted]:
        """The records decoded under the full contract, as ingest decodes them."""
        return [AnnotationSubmitted.model_validate_json(value) for value in self.values]


def batch_records(plan: TablePlan, batch: pa.RecordBatch, first_row: int) -> BatchRecords:
    """The annotations of a batch of rows; ``first_row`` is the 1-based number of its first row.

    Each record is the JSON of an ``AnnotationSubmitted``, written field for field: every value
    is typed by construction from the converted columns, and the constraints a cell can break
    (a record id's presence and length, the confidence's range, a label's presence) are checked
    here. Building and serialising a pydantic object per row would cost more than the rest of
    the path together (the target is 20,000 rows/s); the tests decode what is written here under
    the full contract (:meth:`BatchRecords.events`).
    """
    spec = plan.spec
    types = {f.name: f.type for f in spec.features}
    bad: dict[int, str] = {}
    feature_values: list[list[Any]] = []
    for name, column in plan.features.items():
        convert = categories if types[name] == CATEGORICAL else flags if types[name] == BOOLEAN else numbers
        values, problems = convert(batch.column(column), column)
        feature_values.append(values)
        for row, message in problems.items():
            bad.setdefault(row, message)
    n = batch.num_rows
    labels, problems = (numbers if spec.regression else _class_labels)(batch.column(plan.label), plan.label)
    for row, message in problems.items():
        bad.setdefault(row, message)
    ids = _texts(batch.column(plan.record_id)) if plan.record_id else None
    confidences: list[Any] = [1.0] * n
    if plan.confidence:
        confidences, problems = numbers(batch.column(plan.confidence), plan.confidence)
        for row, message in problems.items():
            bad.setdefault(row, message)
    annotators = _texts(batch.column(plan.annotator)) if plan.annotator else [None] * n
    inference_ids = _texts(batch.column(plan.inference_id)) if plan.inference_id else [None] * n
    names = list(plan.features)
    model = spec.name
    values_out: list[bytes] = []
    invalid: list[tuple[int, str]] = []
    uuids = event_ids(n)
    dumps = orjson.dumps
    rows = zip(*feature_values, strict=True) if names else iter([()] * n)
    for i, cells in enumerate(rows):
        number = first_row + i
        if bad and i in bad:
            invalid.append((number, bad[i]))
            continue
        label = labels[i]
        if label is None:
            invalid.append((number, f"{plan.label}: no label"))
            continue
        confidence = confidences[i]
        if confidence is None:
            confidence = 1.0
        elif not 0.0 <= confidence <= 1.0:
            invalid.append((number, f"{plan.confidence}: confidence {confidence} is not between 0 and 1"))
            continue
        if ids is None:
            record_id = f"{plan.source_id}#{number}"
        else:
            given = ids[i]
            if given is None or len(given) > MAX_RECORD_ID:
                why = "no record id" if given is None else f"a record id is at most {MAX_RECORD_ID} characters"
                invalid.append((number, f"{plan.record_id}: {why}"))
                continue
            record_id = given
        values_out.append(
            dumps(
                {
                    "schema_version": SCHEMA_VERSION,
                    "event_id": uuids[i],
                    "occurred_at": utc_now(),
                    "model": model,
                    "record_id": record_id,
                    "features": dict(zip(names, cells, strict=True)),
                    "label": label,
                    "confidence": confidence,
                    "annotator": annotators[i],
                    "inference_id": inference_ids[i],
                },
                option=orjson.OPT_UTC_Z,
            )
        )
    return BatchRecords(values_out, invalid)


def table_records(plan: TablePlan, path: Path, position: list[int] | None = None) -> Iterator[BatchRecords]:
    """Every row of a table as annotation records, batch by batch (streamed, never loaded whole)."""
    first = 1
    for batch in table_batches(path, plan.columns, position):
        yield batch_records(plan, batch, first)
        first += batch.num_rows


# --- sending -----------------------------------------------------------------------------------


class _Sender:
    """Enqueues records and confirms them a window behind, so the producer never idles on acks."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self.sent = 0
        self._current: list[asyncio.Future[Any]] = []
        self._pending: deque[list[asyncio.Future[Any]]] = deque()

    async def send(self, value: bytes, key: bytes | None) -> None:
        self._current.append(await self.publisher.enqueue(topics.ANNOTATIONS, value, key))
        if len(self._current) >= BATCH:
            self._pending.append(self._current)
            self._current = []
            if len(self._pending) > WINDOW_BATCHES:
                self.sent += await confirm(self._pending.popleft())

    async def flush(self) -> None:
        while self._pending:
            self.sent += await confirm(self._pending.popleft())
        self.sent += await confirm(self._current)
        self._current = []


def prepare_line(line: bytes, model: str | None) -> AnnotationSubmitted:
    """One JSON line as an event; defaults filled in, ``model`` used where the line has none."""
    try:
        body = orjson.loads(line)
    except orjson.JSONDecodeError as err:
        raise InvalidInput(f"not JSON ({err})") from None
    if not isinstance(body, dict):
        raise InvalidInput("not a JSON object")
    if model is not None:
        body.setdefault("model", model)
    try:
        return AnnotationSubmitted.model_validate(body)
    except ValidationError as err:
        raise InvalidInput(describe_validation_error(err)) from None


def _progress(console: Console, unit: str) -> Progress:
    return Progress(
        TextColumn(f"publishing {unit}"),
        BarColumn(),
        MofNCompleteColumn() if unit == "rows" else TextColumn("{task.fields[done]:,} {task.fields[unit]}"),
        TimeElapsedColumn(),
        console=console,
    )


async def publish_annotations(
    options: KafkaOptions,
    path: Path,
    model: str | None,
    raw: bool = False,
    console: Console | None = None,
    spec: ModelSpec | None = None,
    columns: TableColumns | None = None,
) -> dict[str, Any]:
    """Publish every line of a JSON-lines file, or every row of a table (which needs ``spec``).

    Returns the report: counts and the first invalid lines or rows (and, for a table, the
    column mapping and the ignored columns).
    """
    console = console or Console(stderr=True)
    if file_kind(path) != "jsonl":
        if spec is None:
            raise InvalidInput(f"publishing the table {path} needs the model's spec: pass --model")
        if raw:
            raise InvalidInput("--raw sends JSON lines verbatim; a CSV or Parquet file is always read against the spec")
        return await _publish_table(options, path, spec, columns or TableColumns(), console)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise InvalidInput(f"cannot read {path}: {err.strerror}") from None
    publisher = Publisher(options)
    await publisher.start(max_wait_s=15)
    sender = _Sender(publisher)
    lines = invalid = 0
    errors: list[str] = []
    progress = _progress(console, "annotations")
    try:
        with progress, path.open("rb") as handle:
            task = progress.add_task("send", total=size, done=0, unit="lines")
            for number, line in enumerate(handle, start=1):
                progress.advance(task, len(line))
                if not line.strip():
                    continue
                lines += 1
                progress.update(task, done=lines)
                if raw:
                    await sender.send(line.rstrip(b"\r\n"), (model or "").encode() or None)
                    continue
                try:
                    event = prepare_line(line, model)
                except InvalidInput as err:
                    invalid += 1
                    if len(errors) < MAX_REPORTED_ERRORS:
                        errors.append(f"line {number}: {err.message}")
                    continue
                await sender.send(encode_event(event), event.model.encode())
            await sender.flush()
    finally:
        await publisher.stop()
    _print_errors(console, errors, invalid, "lines")
    console.print(f"sent {sender.sent} of {lines} lines to {topics.ANNOTATIONS} ({invalid} invalid, not sent)")
    return {
        "topic": topics.ANNOTATIONS,
        "lines": lines,
        "sent": sender.sent,
        "invalid_lines": invalid,
        "errors": errors,
    }


def _print_errors(console: Console, errors: list[str], invalid: int, what: str) -> None:
    for problem in errors:
        console.print(f"[red]{problem}[/red]", markup=True, highlight=False)
    if invalid > len(errors):
        console.print(f"[red]… and {invalid - len(errors)} more invalid {what}[/red]")


async def _publish_table(
    options: KafkaOptions, path: Path, spec: ModelSpec, columns: TableColumns, console: Console
) -> dict[str, Any]:
    kind = file_kind(path)
    plan = plan_table(spec, table_columns(path), columns, str(path))
    total = _parquet(path).metadata.num_rows if kind == "parquet" else path.stat().st_size
    publisher = Publisher(options)
    await publisher.start(max_wait_s=15)
    sender = _Sender(publisher)
    key = spec.name.encode()
    rows = invalid = 0
    errors: list[str] = []
    position = [0]
    progress = _progress(console, "rows" if kind == "parquet" else "annotations")
    try:
        with progress:
            task = progress.add_task("send", total=total, done=0, unit="rows")
            for batch in table_records(plan, path, position):
                rows += len(batch.values) + len(batch.invalid)
                invalid += len(batch.invalid)
                for number, message in batch.invalid[: max(0, MAX_REPORTED_ERRORS - len(errors))]:
                    errors.append(f"row {number}: {message}")
                for value in batch.values:
                    await sender.send(value, key)
                progress.update(task, completed=position[0], done=rows)
            await sender.flush()
    finally:
        await publisher.stop()
    _print_errors(console, errors, invalid, "rows")
    ignored = (
        f"; {len(plan.ignored)} columns not in the spec, ignored: {', '.join(plan.ignored)}" if plan.ignored else ""
    )
    console.print(
        f"sent {sender.sent:,} of {rows:,} rows to {topics.ANNOTATIONS} ({invalid:,} invalid, not sent){ignored}"
    )
    return {
        "topic": topics.ANNOTATIONS,
        "file": str(path),
        "format": kind,
        "rows": rows,
        "sent": sender.sent,
        "invalid_rows": invalid,
        "errors": errors,
        "columns": {
            "features": plan.features,
            "label": plan.label,
            "record_id": plan.record_id,
            "confidence": plan.confidence,
            "annotator": plan.annotator,
            "inference_id": plan.inference_id,
        },
        "ignored_columns": plan.ignored,
        "absent_features": plan.absent,
    }
