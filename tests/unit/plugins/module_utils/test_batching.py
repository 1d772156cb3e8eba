# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Time-sized write batches, the pause after each commit and id-range paging of reads."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import Any, List, Sequence, Tuple

import pytest

from ansible_collections.acmeops.housekeeping.plugins.module_utils._acmehk import engine, operations
from ansible_collections.acmeops.housekeeping.plugins.module_utils._acmehk.batching import (
    MAX_GROWTH,
    MAX_PAGE_GROWTH,
    AdaptiveSize,
    WriteBatcher,
)
from ansible_collections.acmeops.housekeeping.plugins.module_utils._acmehk.db import SQLiteDatabase
from ansible_collections.acmeops.housekeeping.plugins.module_utils._acmehk.errors import OptionError
from ansible_collections.acmeops.housekeeping.plugins.module_utils._acmehk.schema import detect
from ansible_collections.acmeops.housekeeping.tests.unit.plugins.module_utils.acme_testdb import AcmeDb, db_time

NOW = 1796342400  # 2026-12-04T00:00:00Z


# AdaptiveSize ------------------------------------------------------------------------------


def test_size_only_doubles_when_very_fast():
    size = AdaptiveSize(10, 0.1)
    size.record(0.001)
    assert size.size == 20


def test_size_doubles_when_fast():
    size = AdaptiveSize(10, 0.1)
    size.record(0.03)
    assert size.size == 20
    size.record(0.04)
    assert size.size == 40


def test_size_kept_between_half_and_budget():
    size = AdaptiveSize(10, 0.1)
    size.record(0.07)
    assert size.size == 10


def test_size_capped_at_max_growth():
    size = AdaptiveSize(10, 0.1)
    for _batch in range(20):
        size.record(0.0)
    assert size.size == 10 * MAX_GROWTH


def test_size_halves_when_slow():
    size = AdaptiveSize(10, 0.1)
    for _batch in range(4):
        size.record(0.0)
    assert size.size == 160
    size.record(0.2)
    assert size.size == 80


def test_size_never_below_first():
    size = AdaptiveSize(10, 0.1)
    size.record(5.0)
    assert size.size == 10


def test_size_fixed_without_budget():
    size = AdaptiveSize(10, 0.0)
    size.record(0.0)
    size.record(5.0)
    assert size.size == 10


def test_size_kept_when_growth_not_allowed():
    size = AdaptiveSize(10, 0.1)
    size.record(0.0, can_grow=False)
    assert size.size == 10


# WriteBatcher ------------------------------------------------------------------------------


class FakeDatabase:
    """Record the statements of each write and report one changed row per statement."""

    def __init__(self) -> None:
        self.writes: List[Sequence[Tuple[str, Sequence[Any]]]] = []

    def write(self, statements: Sequence[Tuple[str, Sequence[Any]]]) -> int:
        self.writes.append(list(statements))
        return len(statements)


class FakeClock:
    """A clock that advances by the next of the given durations during each write."""

    def __init__(self, durations: Sequence[float]) -> None:
        self.durations = list(durations)
        self.now = 0.0
        self.reads = 0

    def __call__(self) -> float:
        # Every second read ends a write, so the write appears to take the next duration.
        self.reads += 1
        if self.reads % 2 == 0:
            self.now += self.durations.pop(0) if self.durations else 0.0
        return self.now


def _one_statement_per_item(batch: Sequence[int]) -> List[Tuple[str, Sequence[Any]]]:
    return [("UPDATE t SET x = 1 WHERE id = ?", [item]) for item in batch]


def test_batcher_grows_and_shrinks():
    fake = FakeDatabase()
    sleeps: List[float] = []
    clock = FakeClock([0.001, 0.001, 0.2, 0.03, 0.001])
    batcher = WriteBatcher(fake, 10, 0.05, 0.01, clock=clock, sleep=sleeps.append)

    affected = batcher.run(list(range(1000)), _one_statement_per_item)

    assert affected == 1000
    # 10 and 20 are fast, 40 is over budget, the first 20 is within it, the second 20 is fast,
    # and later writes take no time, so every batch doubles until the items run out.
    assert batcher.batch_sizes == [10, 20, 40, 20, 20, 40, 80, 160, 320, 290]
    assert [len(statements) for statements in fake.writes] == batcher.batch_sizes


def test_batcher_keeps_item_order():
    fake = FakeDatabase()
    batcher = WriteBatcher(fake, 3, 0.05, 0.0, clock=FakeClock([]), sleep=lambda _s: None)

    batcher.run(list(range(50)), _one_statement_per_item)

    written = [params[0] for statements in fake.writes for _sql, params in statements]
    assert written == list(range(50))


def test_batcher_fixed_without_budget():
    fake = FakeDatabase()
    batcher = WriteBatcher(fake, 7, 0.0, 0.0, clock=FakeClock([]), sleep=lambda _s: None)

    batcher.run(list(range(30)), _one_statement_per_item)

    assert batcher.batch_sizes == [7, 7, 7, 7, 2]


def test_batcher_pauses_between_commits():
    fake = FakeDatabase()
    sleeps: List[float] = []
    batcher = WriteBatcher(fake, 5, 0.0, 0.25, clock=FakeClock([]), sleep=sleeps.append)

    batcher.run(list(range(12)), _one_statement_per_item)

    assert len(fake.writes) == 3
    # No pause after the last commit: the run has nothing more to write.
    assert sleeps == [0.25, 0.25]


def test_batcher_pause_covers_overrun():
    sleeps: List[float] = []
    clock = FakeClock([0.2, 0.01])
    batcher = WriteBatcher(FakeDatabase(), 5, 0.05, 0.01, clock=clock, sleep=sleeps.append)

    batcher.run(list(range(30)), _one_statement_per_item)

    # The first transaction overran the 0.05 s budget by 0.15 s, so its pause is that long.
    assert sleeps == [pytest.approx(0.15), 0.01, 0.01]
    assert batcher.batch_sizes == [5, 5, 10, 10]


def test_batcher_no_pause_when_zero():
    sleeps: List[float] = []
    batcher = WriteBatcher(FakeDatabase(), 5, 0.0, 0.0, clock=FakeClock([]), sleep=sleeps.append)

    batcher.run(list(range(12)), _one_statement_per_item)

    assert sleeps == []


def test_batcher_nothing_to_write():
    fake = FakeDatabase()
    sleeps: List[float] = []
    batcher = WriteBatcher(fake, 5, 0.05, 0.01, clock=FakeClock([]), sleep=sleeps.append)

    assert batcher.run([], _one_statement_per_item) == 0
    assert fake.writes == []
    assert sleeps == []


# Apply functions ---------------------------------------------------------------------------


class RecordingDatabase(SQLiteDatabase):
    """An SQLite database that keeps the statements of every write transaction."""

    def __init__(self, path: str) -> None:
        super().__init__(path, writable=True)
        self.transactions: List[List[Tuple[str, Sequence[Any]]]] = []

    def write(self, statements):
        self.transactions.append(list(statements))
        return super().write(statements)


def test_apply_nonces_in_list_limit(tmp_path: Path):
    acme = AcmeDb(tmp_path / "acme_srv.db")
    connection = sqlite3.connect(acme.path)
    connection.executemany("INSERT INTO nonce (nonce, created_at) VALUES (?, ?)",
                           [(f"nonce{index}", db_time(NOW - 86400 - index)) for index in range(1500)])
    connection.commit()
    connection.close()
    database = RecordingDatabase(str(acme.path))
    try:
        schema = detect(database, "auto")
        ctx = operations.Context(db=database, schema=schema, cutoff=NOW, batch_size=100,
                                 batch_time=10.0, batch_pause=0.0)
        plan = operations.plan_nonces(ctx, 3600)
        affected = operations.apply_nonces(ctx, plan, 3600)
    finally:
        database.close()

    assert plan.count == 1500
    assert affected == 1500
    sizes = [sum(len(params) - 1 for _sql, params in statements) for statements in database.transactions]
    # A 10 s budget lets every batch double: 100, 200, 400, then the remaining 800 rows.
    assert sizes == [100, 200, 400, 800]
    for statements in database.transactions:
        for _sql, params in statements:
            assert len(params) - 1 <= operations.IN_LIST_LIMIT


@pytest.mark.parametrize("options", [
    {"batch_time": 0, "batch_pause": 0},
    {"batch_time": 10.0, "batch_pause": 0},
    {"batch_size": 1, "batch_time": 10.0, "batch_pause": 0.001},
])
def test_batching_options_same_result(tmp_path: Path, options):
    results = []
    for name in ("default", "custom"):
        acme = AcmeDb(tmp_path / f"{name}.db")
        account = acme.add_account()
        for index in range(40):
            order = acme.add_order(account, NOW - index * 60 if index % 3 else NOW + 60, "pending")
            acme.add_authorization(order, NOW - index, "valid")
            acme.add_nonce(db_time(NOW - 86400 - index))
        settings = engine.Settings(database=str(acme.path), now=NOW, **(options if name == "custom" else {}))
        invalidated = engine.run_invalidate(settings, ["orders", "authorizations"], check_mode=False)
        cleaned = engine.run_cleanup(settings, ["nonces"], check_mode=False, nonce_validity=3600)
        states = [acme.query(f'SELECT id, status_id FROM "{table}" ORDER BY id') for table in ("orders", "authorization")]
        states.append(acme.query("SELECT id FROM nonce ORDER BY id"))
        results.append((invalidated["orders"]["count"], invalidated["authorizations"]["count"],
                        cleaned["nonces"]["count"], states))

    assert results[0][:3] == (26, 40, 40)
    assert results[1][:3] == results[0][:3]
    assert results[1][3] == results[0][3]


# Paging ------------------------------------------------------------------------------------


class RecordingReads(SQLiteDatabase):
    """An SQLite database that keeps the parameters of every read."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.reads: List[Tuple[str, List[Any]]] = []

    def fetch(self, sql, params=()):
        self.reads.append((sql, list(params)))
        return super().fetch(sql, params)


@pytest.fixture
def sparse_table(tmp_path: Path) -> Path:
    """A table t with ids 1 to 5000 minus every id divisible by 7, and a flag on every 97th."""
    path = tmp_path / "paging.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, flag INTEGER)")
    connection.executemany("INSERT INTO t VALUES (?, ?)",
                           [(i, int(i % 97 == 0)) for i in range(1, 5001) if i % 7])
    connection.commit()
    connection.close()
    return path


PAGED_SELECT = "SELECT id, flag FROM t WHERE flag >= ? AND id > ? AND id <= ? ORDER BY id LIMIT ?"


def _paged(path: Path, flag: int, batch_size: int, budget: float) -> Tuple[List[List[Any]], RecordingReads]:
    database = RecordingReads(str(path))
    try:
        pages = [list(page) for page in database.pages('"t"', PAGED_SELECT, [flag], batch_size, budget)]
    finally:
        database.close()
    return pages, database


@pytest.mark.parametrize("flag", [0, 1])
@pytest.mark.parametrize("batch_size, budget", [(1, 0.0), (50, 0.0), (64, 10.0), (10000, 0.0)])
def test_pages_match_plain_select(sparse_table, flag, batch_size, budget):
    connection = sqlite3.connect(sparse_table)
    expected = connection.execute("SELECT id, flag FROM t WHERE flag >= ? ORDER BY id", [flag]).fetchall()
    connection.close()

    pages, _database = _paged(sparse_table, flag, batch_size, budget)

    rows = [row for page in pages for row in page]
    assert rows == expected
    assert all(page for page in pages)
    # Pages grow only with a time budget, and then by MAX_PAGE_GROWTH at most.
    largest = batch_size * (MAX_PAGE_GROWTH if budget else 1)
    assert all(len(page) <= largest for page in pages)


def test_pages_bounded_span_without_budget(sparse_table):
    _pages, database = _paged(sparse_table, 1, 50, 0.0)

    paged = [params for sql, params in database.reads if sql == PAGED_SELECT]
    assert paged, "no paged statement ran"
    for _flag, low, high, limit in paged:
        assert high - low <= 50
        assert limit == 50
    # The spans cover the ids from the smallest to the largest without gaps.
    assert paged[0][1] == 0
    assert paged[-1][2] == 5000
    for before, after in zip(paged, paged[1:]):
        assert after[1] == before[2]


def test_pages_span_grows_on_selective_filter(sparse_table):
    _pages, database = _paged(sparse_table, 1, 50, 10.0)

    spans = [params[2] - params[1] for sql, params in database.reads if sql == PAGED_SELECT]
    # Every page contains at most one row, far from full, so each span doubles, and the last
    # one ends at the largest id, 5000.
    assert spans == [50, 100, 200, 400, 800, 1600, 1850]


def test_pages_full_page_continues_inside_span(sparse_table):
    pages, database = _paged(sparse_table, 0, 10, 10.0)

    paged = [params for sql, params in database.reads if sql == PAGED_SELECT]
    # Ids 1 to 10 without 7 do not fill a page, so the span doubles to 20 ids. The second
    # page is full at id 22, inside that span, and the third statement starts after it.
    assert paged[1][1:] == [10, 30, 10]
    assert [row[0] for row in pages[1]] == [11, 12, 13, 15, 16, 17, 18, 19, 20, 22]
    assert paged[2][1] == 22


def test_pages_empty_table(tmp_path: Path):
    path = tmp_path / "empty.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, flag INTEGER)")
    connection.close()

    pages, database = _paged(path, 0, 10, 0.0)

    assert pages == []
    assert all(sql != PAGED_SELECT for sql, _params in database.reads)


def test_key_bounds_skip_text_ids(tmp_path: Path):
    path = tmp_path / "text.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE t (id, flag INTEGER)")
    connection.executemany("INSERT INTO t VALUES (?, 0)", [(5,), ("abc",), (-3,), (2.5,), (None,)])
    connection.commit()
    connection.close()

    database = SQLiteDatabase(str(path))
    try:
        assert database.key_bounds('"t"') == (-3, 5)
    finally:
        database.close()


# Settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["batch_time", "batch_pause"])
@pytest.mark.parametrize("value", [-0.01, 10.5, math.nan, math.inf, True, "0.05"])
def test_settings_reject_batch_seconds(option, value):
    with pytest.raises(OptionError) as info:
        engine.Settings.from_params({"database": "/x", option: value})
    message = str(info.value)
    assert f"Invalid value for {option}" in message
    assert repr(value) in message
    assert "from 0" in message


@pytest.mark.parametrize("option", ["batch_time", "batch_pause"])
@pytest.mark.parametrize("value", [0, 0.0, 2, 10.0])
def test_settings_accept_batch_seconds(option, value):
    settings = engine.Settings.from_params({"database": "/x", option: value})
    assert getattr(settings, option) == value


def test_settings_batch_defaults():
    settings = engine.Settings.from_params({"database": "/x"})
    assert settings.batch_time == 0.05
    assert settings.batch_pause == 0.01


def test_pages_grow_when_full_and_fast(sparse_table):
    pages, database = _paged(sparse_table, 0, 10, 10.0)

    limits = [params[3] for sql, params in database.reads if sql == PAGED_SELECT]
    # Every full page comes back far within the budget, so the page size doubles up to its cap.
    assert max(limits) == 10 * MAX_PAGE_GROWTH
    assert limits == sorted(limits)
    assert max(len(page) for page in pages) == 10 * MAX_PAGE_GROWTH
