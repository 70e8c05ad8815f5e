"""``driftloop specs init``: a first spec inferred from a table the user already has. Pure.

A data team arrives with a CSV export or a Parquet file; writing its spec feature by feature is
where the first hour goes. :func:`infer_spec` reads a sample of the table (an in-memory
``pyarrow.Table``: reading the file is the caller's job) and writes a commented YAML spec that
``specs apply`` accepts as written, each inferred choice explained beside it so it is easy to
change. The rules, and why:

================ ===============================================================================
numeric          a number column (or a text column whose cells are at least 99 % numbers, as a
                 CSV gives them, unless digits keep leading zeros: ``00123`` is a code). Only
                 ``min: 0`` is ever declared, and only for a column that is
                 never negative: non-negativity is usually a property of the quantity (amounts,
                 counts, ages), while the sample's extremes are no promise about tomorrow's data,
                 and a declared ``max`` would make ingest reject the first larger value. The
                 observed range and median are given as a comment. A column holding only 0 and 1
                 stays numeric: apps and annotation systems send such flags as numbers, which a
                 ``boolean`` feature refuses; the comment says how to make it a flag.
categorical      text. Its categories are declared (``values``) only when there are at most
                 :data:`MAX_DECLARED_CATEGORIES` and each is seen at least
                 :data:`MIN_CATEGORY_ROWS` times: then the set looks closed, and a new value is
                 more likely a typo than a new category. Otherwise any string is accepted (new
                 categories are learned and watched for drift).
boolean          a boolean column, or text that is only true / false (any case).
allow_missing    set when a null, an empty cell or a NaN occurs in the sample.
left out         the record id (``--id``, default ``record_id``) and the annotation's own
                 columns (``confidence``, ``annotator``, ``inference_id``: ``publish annotations``
                 reads them as such); timestamps and dates (a feature is a number, a category or
                 a flag: derive the hour or the weekday upstream); text with a distinct value in
                 most rows (an identifier, not a feature); a row index (0, 1, 2, … one per row);
                 a column with a single value or no value at all; nested or binary columns.
label            classes when it is text, a boolean, or integers with at most
                 :data:`MAX_INTEGER_CLASSES` distinct values; otherwise a regression label
                 (``min: 0`` when never negative).
gate             a model must beat the baseline that needs no model: always answering the most
                 common class (accuracy; balanced accuracy, against chance, when one class holds
                 :data:`IMBALANCED_SHARE` of the rows) or always answering the median (MAE).
================ ===============================================================================

Feature names must match the spec's pattern (a letter, then letters, digits, ``_ . -``): a
column named otherwise is renamed by :func:`feature_name`, which ``publish annotations`` also
applies to match the file's columns to the spec's features.
"""

from __future__ import annotations

import json
import math
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from shared.errors import InvalidInput, InvalidSpec
from shared.spec import ModelSpec, parse_spec

SAMPLE_ROWS: Final = 100_000
"""Rows a big file is sampled to (its first ones): enough for types, ranges and categories."""
MAX_DECLARED_CATEGORIES: Final = 20
MIN_CATEGORY_ROWS: Final = 5
MAX_INTEGER_CLASSES: Final = 20
MAX_TEXT_CLASSES: Final = 100
"""A text label with more distinct values than this is refused (no classifier has that many classes)."""
MIN_NUMERIC_SHARE: Final = 0.99
"""A text column whose cells are at least this share of numbers is numeric (the rest are bad cells)."""
IDENTIFIER_SHARE: Final = 0.5
IDENTIFIER_MIN_ROWS: Final = 20
IMBALANCED_SHARE: Final = 0.7
MAX_CATEGORY_CHARS: Final = 256
ANNOTATION_COLUMNS: Final = ("confidence", "annotator", "inference_id")
"""Columns ``publish annotations`` reads as the annotation's fields (its flags' defaults)."""
DEFAULT_ID_COLUMN: Final = "record_id"
_TRUE_FALSE: Final = frozenset({"true", "false"})
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|[+-]\d{2}:?\d{2})?)?$")
_CODE = re.compile(r"^\s*0\d")
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
_NAME_LENGTH: Final = 128
_WIDTH: Final = 100


def feature_name(column: str) -> str | None:
    """The spec name of a column: itself when valid, else a deterministic valid spelling.

    Runs of characters a name cannot hold become ``_``; a name that does not start with a letter
    gets an ``f_`` prefix. None for a column with no usable character.

    >>> feature_name("income"), feature_name("Sale Price ($)"), feature_name("2nd floor"), feature_name("%")
    ('income', 'Sale_Price', 'f_2nd_floor', None)
    """
    name = _NOT_IN_NAME.sub("_", column).strip("_")
    if not name:
        return None
    if not name[0].isalpha() or not name[0].isascii():
        name = f"f_{name}"
    return name[:_NAME_LENGTH]


def model_name(stem: str) -> str | None:
    """A model name from a file name: a letter or digit, then letters, digits, ``_ . -``.

    >>> model_name("house prices (2024)"), model_name("__")
    ('house-prices-2024', None)
    """
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-_.")
    return name[:_NAME_LENGTH] or None


@dataclass(frozen=True)
class FeatureChoice:
    """One feature of the inferred spec: its YAML mapping and why."""

    column: str
    spec: dict[str, Any]
    notes: list[str]


@dataclass(frozen=True)
class LeftOut:
    """A column that is not a feature, and why."""

    column: str
    reason: str


@dataclass(frozen=True)
class LabelChoice:
    """The inferred label, and the gate that follows from it."""

    spec: dict[str, Any]
    notes: list[str]
    gate: dict[str, Any]
    gate_note: str
    regression: bool


@dataclass(frozen=True)
class InferredSpec:
    """What :func:`infer_spec` found: the YAML text, the parsed spec, and each choice."""

    text: str
    spec: ModelSpec
    features: list[FeatureChoice]
    left_out: list[LeftOut]
    label: LabelChoice
    rows: int

    def summary(self) -> str:
        """One line for the terminal: what was inferred."""
        kinds = [f.spec.get("type", "numeric") for f in self.features]
        counted = ", ".join(f"{kinds.count(k)} {k}" for k in ("numeric", "categorical", "boolean") if k in kinds)
        task = "a regression label" if self.label.regression else f"{len(self.label.spec['values'])} classes"
        skipped = f", {len(self.left_out)} columns left out" if self.left_out else ""
        return f"{self.spec.name}: {len(self.features)} features ({counted}), {task}{skipped}, from {self.rows:,} rows"


@dataclass
class _Cells:
    """A column's non-missing cells, seen as numbers or as text."""

    rows: int
    missing: int
    numbers: np.ndarray[Any, np.dtype[np.float64]] | None = None
    """The numbers (a number column, or the numeric cells of a text column)."""
    texts: dict[str, int] = field(default_factory=dict)
    """Distinct texts and their rows (a text column)."""
    not_numbers: dict[str, int] = field(default_factory=dict)
    """A mostly numeric text column's cells that are not numbers."""
    flags: tuple[int, int] | None = None
    """Rows true and false (a boolean column)."""
    kind: str = "text"
    """number, text, boolean, time or other: what the cells are."""


def _number_of(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _cells(column: pa.ChunkedArray) -> _Cells:
    """What a column holds, missing values (null, empty text, NaN) counted apart."""
    kind = column.type
    rows = len(column)
    if pa.types.is_dictionary(kind):
        column = column.cast(kind.value_type)
        kind = column.type
    if pa.types.is_boolean(kind):
        true = int(pc.sum(column.cast(pa.int64())).as_py() or 0)
        missing = column.null_count
        return _Cells(rows, missing, flags=(true, rows - missing - true), kind="boolean")
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
        present = values[np.isfinite(values)]
        return _Cells(rows, rows - len(present), numbers=present, kind="number")
    if pa.types.is_temporal(kind):
        return _Cells(rows, column.null_count, kind="time")
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return _Cells(rows, column.null_count, kind="other")
    counted = pc.value_counts(column).to_pylist()
    texts = {c["values"]: c["counts"] for c in counted if c["values"] is not None and c["values"].strip()}
    missing = rows - sum(texts.values())
    if texts and set(t.strip().lower() for t in texts) <= _TRUE_FALSE:
        true = sum(n for t, n in texts.items() if t.strip().lower() == "true")
        return _Cells(rows, missing, flags=(true, rows - missing - true), kind="boolean")
    if texts and all(_TIMESTAMP.match(t.strip()) for t in texts):
        return _Cells(rows, missing, kind="time")
    if any(_CODE.match(t) for t in texts):  # "00123": digits whose leading zeros matter are codes
        return _Cells(rows, missing, texts=texts, kind="text")
    parsed = {t: _number_of(t) for t in texts}
    numeric_rows = sum(n for t, n in texts.items() if parsed[t] is not None)
    present = rows - missing
    if present and numeric_rows >= MIN_NUMERIC_SHARE * present:
        numbers = np.repeat(
            np.array([parsed[t] for t in texts if parsed[t] is not None], dtype=np.float64),
            [n for t, n in texts.items() if parsed[t] is not None],
        )
        bad = {t: n for t, n in texts.items() if parsed[t] is None}
        return _Cells(rows, missing, numbers=numbers, not_numbers=bad, kind="number")
    return _Cells(rows, missing, texts=texts, kind="text")


def _fmt(x: float) -> str:
    """A number as a comment shows it.

    >>> _fmt(1234567.0), _fmt(3.14159), _fmt(-2.0), _fmt(0.000123)
    ('1,234,567', '3.142', '-2', '0.000123')
    """
    if x.is_integer() and abs(x) < 1e15:
        return f"{int(x):,}"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.4g}"


def _share(part: int, whole: int) -> str:
    """A share as a comment shows it.

    >>> _share(21, 1000), _share(1, 100_000), _share(0, 10)
    ('2.1%', '<0.1%', '0%')
    """
    if part == 0 or whole == 0:
        return "0%"
    share = 100 * part / whole
    return "<0.1%" if share < 0.05 else f"{share:.1f}%"


def _yaml_number(x: float) -> str:
    """A number as plain YAML 1.1 reads it back as a number (no exponent without a dot).

    >>> _yaml_number(57000.0), _yaml_number(0.00001), _yaml_number(41.3)
    ('57000', '0.00001', '41.3')
    """
    return str(np.format_float_positional(x, trim="-"))


def _scalar(text: str) -> str:
    """A name as YAML: plain when it reads back as itself, else double-quoted (``yes``, ``null``, ``1e3``)."""
    try:
        plain = yaml.safe_load(text) == text and ":" not in text and "#" not in text
    except yaml.YAMLError:
        plain = False
    return text if plain else json.dumps(text, ensure_ascii=False)


def _flow(mapping: dict[str, Any]) -> str:
    """A feature's mapping on one line: ``{name: income, type: numeric, min: 0}``."""
    parts = []
    for key, value in mapping.items():
        if isinstance(value, bool):
            shown = "true" if value else "false"
        elif isinstance(value, int | float):
            shown = _yaml_number(float(value))
        elif isinstance(value, list):
            shown = "[" + ", ".join(json.dumps(v, ensure_ascii=False) for v in value) + "]"
        else:
            shown = _scalar(str(value))
        parts.append(f"{key}: {shown}")
    return "{" + ", ".join(parts) + "}"


def _range_note(cells: _Cells) -> str:
    assert cells.numbers is not None
    values = cells.numbers
    integral = bool(np.all(np.equal(np.mod(values, 1), 0)))
    return (
        f"numbers {_fmt(float(values.min()))} … {_fmt(float(values.max()))} "
        f"(median {_fmt(float(np.median(values)))}){', integers' if integral else ''}"
    )


def _missing_note(cells: _Cells) -> str | None:
    if not cells.missing:
        return None
    return f"{_share(cells.missing, cells.rows)} missing ({cells.missing:,} rows): allow_missing"


def _numeric(column: str, name: str, cells: _Cells) -> FeatureChoice | LeftOut:
    assert cells.numbers is not None
    values = cells.numbers
    present = len(values)
    low, high = float(values.min()), float(values.max())
    integral = bool(np.all(np.equal(np.mod(values, 1), 0)))
    distinct = len(np.unique(values))
    if distinct == 1 and not cells.missing:
        return LeftOut(column, f"one value ({_fmt(low)}) in every row: it cannot tell records apart")
    if integral and not cells.missing and distinct == present > IDENTIFIER_MIN_ROWS and high - low == present - 1:
        return LeftOut(column, f"{_fmt(low)}, {_fmt(low + 1)}, … one value per row: a row index, not a feature")
    spec: dict[str, Any] = {"name": name, "type": "numeric"}
    notes = [_range_note(cells)]
    if low >= 0:
        spec["min"] = 0
        notes.append("never negative: min 0")
    if distinct == 2 and low == 0 and high == 1:
        notes.append("only 0 and 1: kept numeric, as apps send it; type: boolean makes it a flag (true / false)")
    if cells.not_numbers:
        bad_rows = sum(cells.not_numbers.values())
        examples = ", ".join(repr(t) for t in list(cells.not_numbers)[:3])
        notes.append(
            f"{bad_rows:,} cells are not numbers (e.g. {examples}): publish reports those rows as invalid; "
            "fix them, or empty them to mean missing"
        )
    missing = _missing_note(cells)
    if missing:
        spec["allow_missing"] = True
        notes.append(missing)
    return FeatureChoice(column, spec, notes)


def _categorical(column: str, name: str, cells: _Cells) -> FeatureChoice | LeftOut:
    texts = cells.texts
    present = sum(texts.values())
    distinct = len(texts)
    if not texts:
        return LeftOut(column, "no value in any row")
    if distinct == 1 and not cells.missing:
        return LeftOut(column, f"one value ({next(iter(texts))!r}) in every row: it cannot tell records apart")
    if present >= IDENTIFIER_MIN_ROWS and distinct > IDENTIFIER_SHARE * present:
        return LeftOut(column, f"{distinct:,} distinct texts in {present:,} rows: an identifier rather than a feature")
    ordered = sorted(texts.items(), key=lambda item: (-item[1], item[0]))
    spec: dict[str, Any] = {"name": name, "type": "categorical"}
    rarest = ordered[-1][1]
    top = ", ".join(f"{t!r} {_share(n, present)}" for t, n in ordered[:3])
    if (
        distinct <= MAX_DECLARED_CATEGORIES
        and rarest >= MIN_CATEGORY_ROWS
        and all(len(t) <= MAX_CATEGORY_CHARS for t in texts)
    ):
        spec["values"] = sorted(texts)
        notes = [
            f"{distinct} categories, each seen at least {rarest:,} times ({top}): declared, so ingest rejects "
            "any other; drop `values` to accept new ones"
        ]
    else:
        why = (
            f"more than {MAX_DECLARED_CATEGORIES}"
            if distinct > MAX_DECLARED_CATEGORIES
            else f"some seen fewer than {MIN_CATEGORY_ROWS} times"
        )
        notes = [
            f"{distinct:,} distinct categories ({top}, …): not declared ({why}), so new ones are accepted, "
            "learned and watched for drift"
        ]
    missing = _missing_note(cells)
    if missing:
        spec["allow_missing"] = True
        notes.append(missing)
    return FeatureChoice(column, spec, notes)


def _boolean(column: str, name: str, cells: _Cells) -> FeatureChoice | LeftOut:
    assert cells.flags is not None
    true, false = cells.flags
    if not true and not false:
        return LeftOut(column, "no value in any row")
    if (not true or not false) and not cells.missing:
        return LeftOut(column, f"{'true' if true else 'false'} in every row: it cannot tell records apart")
    spec: dict[str, Any] = {"name": name, "type": "boolean"}
    notes = [f"true / false, true in {_share(true, true + false)} of rows"]
    missing = _missing_note(cells)
    if missing:
        spec["allow_missing"] = True
        notes.append(missing)
    return FeatureChoice(column, spec, notes)


def _feature(column: str, cells: _Cells) -> FeatureChoice | LeftOut:
    name = feature_name(column)
    if name is None:
        return LeftOut(column, "no letter or digit in its name")
    if cells.kind == "time":
        return LeftOut(column, "timestamps or dates: derive a number or a category (hour, weekday) upstream")
    if cells.kind == "other":
        return LeftOut(column, "nested or binary cells: a feature is a number, a category or a flag")
    if cells.rows == cells.missing:
        return LeftOut(column, "no value in any row")
    choice = (
        _boolean(column, name, cells)
        if cells.kind == "boolean"
        else _numeric(column, name, cells)
        if cells.kind == "number"
        else _categorical(column, name, cells)
    )
    if isinstance(choice, FeatureChoice) and name != column:
        choice.notes.insert(0, f"column {column!r} (renamed to fit a feature name's pattern)")
    return choice


def _round_up(x: float, digits: int = 3) -> float:
    """``x`` rounded up to ``digits`` significant digits.

    >>> _round_up(41.234), _round_up(57012.0), _round_up(0.0)
    (41.3, 57100.0, 0.0)
    """
    if x <= 0:
        return 0.0
    step = 10.0 ** (math.floor(math.log10(x)) - digits + 1)
    return float(f"{math.ceil(round(x / step, 9)) * step:.{digits}g}")


def _round_down(x: float) -> float:
    return math.floor(x * 100 + 1e-9) / 100


def _classes(column: str, counts: dict[Any, int], rows: int, shown: str) -> LabelChoice:
    present = sum(counts.values())
    ordered = sorted(counts.items(), key=lambda item: (-item[1], str(item[0])))
    majority = ordered[0][1] / present
    values = sorted(counts, key=lambda v: (isinstance(v, str), v))
    top = ", ".join(f"{v!r} {_share(n, present)}" for v, n in ordered[:5])
    notes = [f"{column}: {len(counts)} classes{shown}: {top}{', …' if len(counts) > 5 else ''}"]
    rare = [v for v, n in ordered if n < 10]
    if rare:
        notes.append(f"few rows of {', '.join(map(repr, rare[:3]))}: the holdout may hold none of them")
    if rows > present:
        notes.append(f"{rows - present:,} rows have no label: publish reports them as invalid")
    if majority >= IMBALANCED_SHARE:
        chance = _round_down(1 / len(counts))
        gate = {"metric": "balanced_accuracy", "min": chance, "min_delta_vs_champion": -0.005}
        note = (
            f"{ordered[0][0]!r} is {_share(ordered[0][1], present)} of rows, so accuracy would flatter a model "
            f"that always answers it: balanced accuracy, which must beat chance ({chance})"
        )
    else:
        gate = {"metric": "accuracy", "min": _round_down(majority), "min_delta_vs_champion": -0.005}
        note = (
            f"a model must be at least as accurate as always answering {ordered[0][0]!r} "
            f"({_round_down(majority)}); it may be 0.005 less accurate than the champion (noise)"
        )
    return LabelChoice({"values": values}, notes, gate, note, regression=False)


def _label(column: str, cells: _Cells) -> LabelChoice:
    present = cells.rows - cells.missing
    if cells.kind == "boolean":
        assert cells.flags is not None
        true, false = cells.flags
        counts = {v: n for v, n in ((0, false), (1, true)) if n}
        if len(counts) < 2:
            raise InvalidInput(f"label column {column!r} is {'true' if true else 'false'} in every row")
        return _classes(column, counts, cells.rows, " (false → 0, true → 1)")
    if cells.kind == "number":
        assert cells.numbers is not None
        values = cells.numbers
        distinct = np.unique(values)
        if len(distinct) < 2:
            raise InvalidInput(f"label column {column!r} has one value in every row: there is nothing to learn")
        integral = bool(np.all(np.equal(np.mod(distinct, 1), 0)))
        if integral and len(distinct) <= MAX_INTEGER_CLASSES:
            uniques, counts = np.unique(values, return_counts=True)
            choice = _classes(
                column, {int(v): int(n) for v, n in zip(uniques, counts, strict=True)}, cells.rows, ", integers"
            )
            choice.notes.append("for a number per record instead: label: {type: regression}")
            return choice
        low = float(values.min())
        spec: dict[str, Any] = {"type": "regression"}
        notes = [f"{column}: {_range_note(cells)}, {len(distinct):,} distinct: a number per record (regression)"]
        if low >= 0:
            spec["min"] = 0
            notes.append("never negative: min 0 declared (ingest rejects a negative label)")
        if cells.rows > present:
            notes.append(f"{cells.rows - present:,} rows have no label: publish reports them as invalid")
        median = float(np.median(values))
        baseline = _round_up(float(np.mean(np.abs(values - median))))
        gate = {"metric": "mae", "max": baseline, "min_delta_vs_champion": 0.0}
        note = (
            f"always answering the median ({_fmt(median)}) has an MAE of {_fmt(baseline)}: a model must do better, "
            "and be at least as good as the champion"
        )
        return LabelChoice(spec, notes, gate, note, regression=True)
    if cells.kind != "text" or not cells.texts:
        raise InvalidInput(f"label column {column!r} holds {cells.kind} values: a label is a class or a number")
    if len(cells.texts) < 2:
        raise InvalidInput(f"label column {column!r} has one value in every row: there is nothing to learn")
    if len(cells.texts) > MAX_TEXT_CLASSES:
        raise InvalidInput(
            f"label column {column!r} has {len(cells.texts):,} distinct texts: too many classes for a classifier "
            f"(at most {MAX_TEXT_CLASSES}); is it the right column?"
        )
    return _classes(column, cells.texts, cells.rows, ", texts")


def _comment(lines: Sequence[str], indent: str) -> list[str]:
    """Comment lines, wrapped; continuation lines indented under the first."""
    out: list[str] = []
    for line in lines:
        out += textwrap.wrap(
            line,
            width=_WIDTH,
            initial_indent=f"{indent}# ",
            subsequent_indent=f"{indent}#   ",
            break_on_hyphens=False,
            break_long_words=False,
        )
    return out


def infer_spec(
    table: pa.Table,
    label: str,
    *,
    name: str,
    source: str,
    id_column: str | None = None,
    total_rows: int | None = None,
    more_rows: bool = False,
) -> InferredSpec:
    """A commented spec for the model ``name`` from a sample of a table.

    Parameters
    ----------
    table
        The sample (the whole table when it is small).
    label
        The label's column.
    name
        The model name.
    source
        The file's name, as the comments and the suggested commands give it.
    id_column
        The record id's column (default: ``record_id`` when there is one); never a feature.
    total_rows
        The file's rows, when known; the comments say when the sample holds fewer.
    more_rows
        True when the file has rows beyond the sample and their number is unknown (a CSV).

    Raises
    ------
    InvalidInput
        A missing column, a label that cannot be one, columns whose names clash once renamed.

    >>> t = pa.table({"x": [1.5, 2.0, None, 4.0] * 10, "kind": ["a", "b"] * 20, "y": ["no", "yes"] * 20})
    >>> inferred = infer_spec(t, "y", name="demo", source="demo.csv")
    >>> [f.spec for f in inferred.features][0]
    {'name': 'x', 'type': 'numeric', 'min': 0, 'allow_missing': True}
    >>> [f.spec for f in inferred.features][1]
    {'name': 'kind', 'type': 'categorical', 'values': ['a', 'b']}
    >>> inferred.spec.label.values, inferred.spec.gate.metric
    (['no', 'yes'], 'accuracy')
    """
    columns = table.column_names
    if label not in columns:
        raise InvalidInput(
            f"{source} has no column {label!r} for the label (--label); its columns: {', '.join(columns)}"
        )
    if id_column is not None and id_column not in columns:
        raise InvalidInput(f"{source} has no column {id_column!r} (--id); its columns: {', '.join(columns)}")
    if model_name(name) != name:
        raise InvalidInput(f"{name!r} is not a model name: a letter or digit, then letters, digits, _ . - (--name)")
    record_id = id_column or (DEFAULT_ID_COLUMN if DEFAULT_ID_COLUMN in columns else None)
    rows = table.num_rows
    if rows == 0:
        raise InvalidInput(f"{source} has no rows: a spec is inferred from data")
    left_out: list[LeftOut] = []
    features: list[FeatureChoice] = []
    for column in columns:
        if column == label:
            continue
        if column == record_id:
            left_out.append(LeftOut(column, "the record id: a re-published row is deduplicated by it"))
        elif column in ANNOTATION_COLUMNS:
            left_out.append(LeftOut(column, f"publish annotations reads it as the annotation's {column}"))
        else:
            choice = _feature(column, _cells(table.column(column)))
            (features if isinstance(choice, FeatureChoice) else left_out).append(choice)  # type: ignore[arg-type]
    names: dict[str, str] = {}
    for choice in features:
        clash = names.setdefault(choice.spec["name"], choice.column)
        if clash != choice.column:
            raise InvalidInput(
                f"columns {clash!r} and {choice.column!r} both become the feature {choice.spec['name']!r}; "
                "rename one of them in the file"
            )
    if not features:
        raise InvalidInput(
            f"{source} has no column usable as a feature: {'; '.join(f'{o.column}: {o.reason}' for o in left_out)}"
        )
    label_choice = _label(label, _cells(table.column(label)))
    text = _render(
        name, source, label, record_id, features, left_out, label_choice, rows, total_rows, more_rows, columns
    )
    try:
        spec = parse_spec(text, source=f"the spec inferred from {source}")
    except InvalidSpec as err:  # a column name the spec's rules refuse in this combination (an output's name)
        raise InvalidInput(f"{err.message}; rename the column in the file") from None
    return InferredSpec(text, spec, features, left_out, label_choice, rows)


def _render(
    name: str,
    source: str,
    label: str,
    record_id: str | None,
    features: list[FeatureChoice],
    left_out: list[LeftOut],
    label_choice: LabelChoice,
    rows: int,
    total_rows: int | None,
    more_rows: bool,
    columns: list[str],
) -> str:
    sample = (
        f"all {rows:,} rows read"
        if total_rows is None or total_rows <= rows
        else f"its first {rows:,} rows read (of {total_rows:,}), so rare values may be missing from what follows"
    )
    if more_rows:
        sample = f"its first {rows:,} rows read (the file has more), so rare values may be missing from what follows"
    flags = f" --label {_shell(label)}" + (
        "" if record_id in (None, DEFAULT_ID_COLUMN) else f" --id {_shell(record_id)}"
    )
    head = [
        f"A driftloop spec inferred by `driftloop specs init` from {source}: {sample}.",
        "Every inferred choice is explained beside it: change what the data could not tell, then",
        "  driftloop specs apply FILE.yaml",
        "and publish the table itself (its label, id and annotation columns mapped by the same flags):",
        f"  driftloop publish annotations {_shell(source)} --model {name}{flags}",
    ]
    out = _comment(head[:1], "") + [f"# {line}" for line in head[1:]]
    if record_id is None:
        out += _comment(
            [
                "No record id column (--id, default record_id): publish derives each row's id from the file name "
                "and row number, so re-publishing the same file is deduplicated"
            ],
            "",
        )
    if left_out:
        out.append("#")
        out.append("# Columns that are not features:")
        out += [line.replace("# ", "#   ", 1) for line in _comment([f"{o.column}: {o.reason}" for o in left_out], "")]
    out.append(f"name: {_scalar(name)}")
    out.append("features:")
    if any(f.spec["type"] == "numeric" for f in features):
        out += _comment(
            [
                "Numeric features declare only min 0, and only when never negative: the sample's range is a comment, "
                "as its extremes are no promise about tomorrow's and a declared max would reject the first larger value"
            ],
            "  ",
        )
    for choice in features:
        out += _comment([choice.notes[0] + ("; " + "; ".join(choice.notes[1:]) if choice.notes[1:] else "")], "  ")
        out.append(f"  - {_flow(choice.spec)}")
    out.append("label:")
    out += _comment(["; ".join(label_choice.notes)], "  ")
    for key, value in label_choice.spec.items():
        out.append(f"  {key}: {_flow_value(value)}")
    out += _sections(label_choice, rows if total_rows is None else total_rows, "confidence" in columns)
    return "\n".join(out) + "\n"


def _flow_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(json.dumps(v, ensure_ascii=False) for v in value) + "]"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _yaml_number(float(value))
    return str(value)


def _shell(text: str) -> str:
    """A word as a shell command line takes it.

    >>> _shell("price"), _shell("sale price")
    ('price', "'sale price'")
    """
    return text if re.fullmatch(r"[A-Za-z0-9_.,/:=+-]+", text) else "'" + text.replace("'", "'\\''") + "'"


def _sections(label: LabelChoice, rows: int, confidence_column: bool) -> list[str]:
    """The spec's defaults for everything the data cannot tell, each said out loud."""
    estimator = "HistGradientBoostingRegressor" if label.regression else "HistGradientBoostingClassifier"
    others = (
        "Ridge, RandomForestRegressor, ExtraTreesRegressor, GradientBoostingRegressor, SGDRegressor"
        if label.regression
        else "LogisticRegression, RandomForestClassifier, ExtraTreesClassifier, GradientBoostingClassifier, "
        "SGDClassifier"
    )
    window = "the newest 50,000 labelled rows" + (
        f" (the table has {rows:,}: raise last_rows to train on more)" if rows > 50_000 else ""
    )
    gate_bound = "min" if "min" in label.gate else "max"
    error_unit = (
        "relative to the champion's MAE (0.05: 5 % worse)" if label.regression else "in error rate (0.05: 5 points)"
    )
    confidence = (
        "a confidence column is present: raise min_confidence to keep unsure labels out"
        if confidence_column
        else "every label is taken (confidence defaults to 1.0)"
    )
    return [
        "validation:",
        f"  min_confidence: 0.0          # {confidence}",
        "  max_rejection_rate: 0.2      # alarm when more than a fifth of a batch is rejected",
        "  label_shift_alert: 0.2       # flag a dataset version whose labels shift this much",
        "training:",
        *_comment([f"handles missing values and categories itself; or {others}"], "  "),
        f"  estimator: {estimator}",
        "  params: {}",
        *_comment([f"{window}; after a confirmed drift, only rows of the new regime"], "  "),
        "  window: {last_rows: 50000, since_change: true, min_rows_after_change: 1000}",
        "  holdout: 0.2                 # the newest fifth is the test set",
        "  seed: 42",
        "triggers:",
        "  on_drift: true               # retrain when the monitor confirms a drift",
        "  new_labels: 5000             # ... and after this many new labels",
        "  # schedule: 24h              # ... and on a clock, if you want one",
        "  cooldown: 5m",
        "  max_runs_per_hour: 6",
        "gate:",
        *_comment([label.gate_note], "  "),
        f"  metric: {label.gate['metric']}",
        f"  {gate_bound}: {_yaml_number(label.gate[gate_bound])}",
        f"  min_delta_vs_champion: {_yaml_number(label.gate['min_delta_vs_champion'])}",
        "deployment:",
        "  strategy: canary             # canary | shadow | direct: a new version first takes a tenth of traffic",
        "  canary_traffic: 0.1",
        *_comment([f"a canary is judged on 500 labelled predictions; errors {error_unit}"], "  "),
        "  promote_after: {labelled_samples: 500, max_error_delta: 0.0}",
        "  rollback_on: {error_increase: 0.05}",
        "monitoring:",
        "  data_detector: ADWIN         # or KSWIN",
        "  concept_detector: ADWIN      # or DDM, HDDM_A, HDDM_W",
        "  psi_alert: 0.2",
        "  confirmation_samples: 200    # fresh samples that must confirm a candidate alarm",
        "  alarm_cooldown: 10m",
        "  join_retention: 1h           # how long a prediction waits for its ground truth",
    ]
