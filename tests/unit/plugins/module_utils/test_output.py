# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Page-wise CSV and JSON writers against a row-by-row reference of the same format."""

from __future__ import annotations

import collections
import csv
import datetime
import io
import json
from typing import Any, Dict, List

import pytest

from ansible_collections.acmeops.housekeeping.plugins.module_utils._acmehk import output


def reference_csv(columns: List[str], rows: List[Dict[str, Any]]) -> str:
    """Write CSV one row at a time, removing CR and LF from every string value first."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=",", quotechar='"', quoting=csv.QUOTE_NONNUMERIC)

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("\r\n", "\n").replace("\r", "").replace("\n", "")
        return value

    writer.writerow([clean(column) for column in columns])
    for row in rows:
        writer.writerow([clean(row.get(column, "")) for column in columns])
    return buffer.getvalue()


def write_csv(columns: List[str], rows: List[Dict[str, Any]], page_rows: int) -> output.Sink:
    sink = output.Sink(None, write_file=False, keep_content=True)
    writer = output.CsvWriter(sink, columns, page_rows=page_rows)
    for row in rows:
        writer.add(row)
    writer.close()
    assert writer.rows == len(rows)
    return sink


COLUMNS = ["account.id", "account.name", "account.contact", "order.expires"]

PLAIN_ROWS = [
    {"account.id": index, "account.name": "acct%d" % index, "account.contact": '["mailto:a@example.org"]',
     "order.expires": 1.5 * index}
    for index in range(7)
]

BREAK_ROWS = [
    {"account.id": 1, "account.name": "line\nbreak", "account.contact": "cr\r\nlf", "order.expires": None},
    {"account.id": 2, "account.name": "only\rcr", "account.contact": "", "order.expires": True},
]

MISSING_ROWS = [
    {"account.id": 3},
    collections.defaultdict(lambda: "from __missing__", {"account.id": 4}),
    {"account.id": 5, "account.name": b"bytes\nvalue", "account.contact": datetime.datetime(2026, 1, 2, 3, 4, 5),
     "order.expires": 0},
]


@pytest.mark.parametrize("page_rows", [1, 2, 3, 500])
@pytest.mark.parametrize(
    "rows",
    [[], PLAIN_ROWS, BREAK_ROWS, MISSING_ROWS, PLAIN_ROWS + BREAK_ROWS + MISSING_ROWS],
    ids=["empty", "plain", "line-breaks", "missing-columns", "mixed"],
)
def test_csv_writer_matches_row_by_row(rows, page_rows):
    sink = write_csv(COLUMNS, rows, page_rows)
    assert sink.text() == reference_csv(COLUMNS, rows)


def test_csv_writer_header_with_line_break():
    columns = ["a\nb", "c"]
    rows = [{"a\nb": "x", "c": 1}]
    assert write_csv(columns, rows, 500).text() == reference_csv(columns, rows)


@pytest.mark.parametrize("columns", [[], ["only"]])
def test_csv_writer_few_columns(columns):
    rows = [{"only": "one\ntwo"}, {}]
    assert write_csv(columns, rows, 500).text() == reference_csv(columns, rows)


def test_csv_writer_one_write_per_page():
    sink = write_csv(COLUMNS, PLAIN_ROWS, 3)
    # The header, two full pages of three rows and the last page of one row.
    assert len(sink.content or []) == 4
    assert sink.size == len(reference_csv(COLUMNS, PLAIN_ROWS).encode("utf-8"))


@pytest.mark.parametrize("page_rows", [1, 2, 500])
@pytest.mark.parametrize("count", [0, 1, 5])
def test_json_writer_matches_dump(count, page_rows):
    elements = [{"id": index, "name": "n\u00e4me %d" % index, "when": datetime.date(2026, 1, index + 1)}
                for index in range(count)]
    sink = output.Sink(None, write_file=False, keep_content=True)
    writer = output.JsonArrayWriter(sink, page_rows=page_rows)
    for element in elements:
        writer.add(element)
    writer.close()
    assert writer.rows == count
    assert sink.text() == json.dumps(elements, ensure_ascii=False, indent=4, default=str)


def test_json_writer_flushes_large_elements():
    # Each element serialises to more than WRITE_PAGE_CHARS, so none waits for a full page.
    elements = [{"id": index, "blob": "x" * output.WRITE_PAGE_CHARS} for index in range(3)]
    sink = output.Sink(None, write_file=False, keep_content=True)
    writer = output.JsonArrayWriter(sink, page_rows=500)

    writer.add(elements[0])
    written_after_first = len(sink.content or [])
    for element in elements[1:]:
        writer.add(element)
    writer.close()

    assert written_after_first == 1
    assert len(sink.content or []) == 4
    assert sink.text() == json.dumps(elements, ensure_ascii=False, indent=4, default=str)
