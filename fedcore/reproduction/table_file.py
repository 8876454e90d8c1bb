"""A reproduced table someone hands us (`TABLE.csv` from `python -m fedcore reproduce`),
read as untrusted input for the app's Compare.

Only what was measured is taken from the file: the table must be one fedcore knows
and every row one of its rows, and the published figures come from fedcore's own
`published.toml`, so a file cannot put words in a paper's mouth. The file is bounded
in size and rows, and each measured figure checked (a number, in range) before any
chart sees it; the first problem is one line.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

import pandas as pd

from fedcore.experiment.results_file import MEGABYTE
from fedcore.experiment.specs import ConfigError
from fedcore.reproduction.tables import MAX_ROUNDS, Row, Table, find_table

MAX_TABLE_BYTES = MEGABYTE
MAX_TABLE_ROWS = 500
REQUIRED = ("table", "row", "measure", "measured")


class TableFileError(ValueError):
    """A reproduced-table file that cannot be used; the message names the file."""


@dataclass(frozen=True)
class ReproducedTable:
    """A table's rows with what a reproduction measured (None: no figure)."""

    table: Table
    measured: tuple[tuple[Row, float | None], ...]

    def frame(self) -> pd.DataFrame:
        """Long form for a chart: one line per row and `kind` (paper, measured)."""
        records = []
        for row, value in self.measured:
            for kind, figure in (("paper", row.paper), ("measured", value)):
                if figure is not None:
                    records.append({"row": row.key, "kind": kind, "value": figure})
        return pd.DataFrame(records, columns=["row", "kind", "value"])


def _figure(text: str, table: Table, where: str) -> float | None:
    if text.strip() == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise TableFileError(f"{where}: measured {text[:40]!r} is not a number") from None
    high = MAX_ROUNDS if table.measure == "rounds" else 100.0
    if not math.isfinite(value) or not 0 <= value <= high:
        raise TableFileError(f"{where}: measured {value:g} is not in 0-{high:g}")
    return value


def read_reproduced_table(name: str, contents: bytes) -> ReproducedTable:
    """`contents` of the file `name` as a reproduced table; `TableFileError` (one line
    naming the file and the first problem) if it is not one."""
    if len(contents) > MAX_TABLE_BYTES:
        raise TableFileError(
            f"{name}: {len(contents) / MEGABYTE:.1f} MB, more than the "
            f"{MAX_TABLE_BYTES // MEGABYTE} MB a reproduced table may be"
        )
    try:
        lines = list(csv.DictReader(io.StringIO(contents.decode("utf-8"))))
    except (UnicodeDecodeError, csv.Error) as error:
        raise TableFileError(f"{name}: not a CSV table ({error})") from None
    if not lines:
        raise TableFileError(f"{name}: no rows")
    if len(lines) > MAX_TABLE_ROWS:
        raise TableFileError(f"{name}: {len(lines)} rows, more than {MAX_TABLE_ROWS}")
    missing = [column for column in REQUIRED if column not in lines[0]]
    if missing:
        raise TableFileError(
            f"{name}: no column {missing[0]!r}: not a table `python -m fedcore reproduce` wrote"
        )
    names = {line["table"] for line in lines}
    if len(names) != 1:
        raise TableFileError(f"{name}: rows of {len(names)} tables; one table a file")
    try:
        table = find_table(names.pop() or "")
    except ConfigError as error:
        raise TableFileError(f"{name}: {error}") from None
    rows = {row.key: row for row in table.rows}
    measured: list[tuple[Row, float | None]] = []
    for number, line in enumerate(lines, start=2):  # line 1 is the header
        where = f"{name}: line {number}"
        key = line.get("row") or ""
        if key not in rows:
            raise TableFileError(f"{where}: {key[:60]!r} is not a row of {table.name}")
        if line.get("measure") != table.measure:
            raise TableFileError(f"{where}: measure {line.get('measure')!r}, not {table.measure}")
        if any(row.key == key for row, _ in measured):
            raise TableFileError(f"{where}: row {key!r} is given twice")
        measured.append((rows[key], _figure(line.get("measured") or "", table, where)))
    return ReproducedTable(table, tuple(measured))
