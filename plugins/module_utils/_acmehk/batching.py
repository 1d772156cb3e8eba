# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Batch sizes that follow a time budget, so no statement holds a database lock for long."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, List, Sequence, TypeVar

if TYPE_CHECKING:
    from .db import Database, Statement

DEFAULT_BATCH_TIME = 0.05
DEFAULT_BATCH_PAUSE = 0.01
# A batch never grows beyond this multiple of batch_size. The cap bounds the statements and
# memory of one transaction when the clock reports very short times.
MAX_GROWTH = 64
# Rows of one read page never exceed this multiple of batch_size, so a page of wide rows
# (certificates with their PEM text) stays a few MiB.
MAX_PAGE_GROWTH = 8

Item = TypeVar("Item")


class AdaptiveSize:
    """Rows or ids per batch, grown after a fast batch and halved after one over the budget.

    A batch under half of the budget doubles the size, so with a cost linear in the rows the
    next batch stays within the budget. Growing by no more than that leaves room for batches
    that cost more than their predecessors. The size is always batch_size times a power of
    two between 1 and MAX_GROWTH, so the first batch is the smallest, and a budget of 0 keeps
    every batch at batch_size.
    """

    def __init__(self, first: int, budget: float, max_growth: int = MAX_GROWTH) -> None:
        self.minimum = first
        self.maximum = first * max_growth
        self.budget = budget
        self.size = first

    def record(self, seconds: float, can_grow: bool = True) -> None:
        """Resize after a batch that took seconds. can_grow=False keeps the size from growing."""
        if self.budget <= 0:
            return
        if seconds > self.budget:
            self.size = max(self.minimum, self.size // 2)
        elif can_grow and seconds < self.budget / 2:
            self.size = min(self.maximum, self.size * 2)


class WriteBatcher:
    """Commit items in write transactions sized by a time budget, pausing after each commit.

    The pause lets the acme2certifier server take the write lock between two transactions.
    None follows the last transaction: the caller's next step starts with reads, which a
    waiting server's PENDING lock holds back.
    SQLite's default busy handler (sqliteDefaultBusyCallback in its main.c) retries after 1, 2,
    5, 10, ... 100 ms, so without a pause a waiting server seldom finds the lock free.
    """

    def __init__(
        self,
        db: "Database",
        first: int,
        budget: float,
        pause: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.db = db
        self.size = AdaptiveSize(first, budget)
        self.pause = pause
        self.clock = clock
        self.sleep = sleep
        # Sizes of the committed batches, in order, for tests and diagnostics.
        self.batch_sizes: List[int] = []

    def run(self, items: Sequence[Item], statements: Callable[[Sequence[Item]], List["Statement"]]) -> int:
        """Write all items, building each transaction's statements from its slice of items.

        Returns the number of rows the statements changed.
        """
        affected = 0
        position = 0
        while position < len(items):
            batch = items[position:position + self.size.size]
            planned = statements(batch)
            # The time includes any wait for the lock in BEGIN, so a busy server makes the
            # batches smaller, never larger.
            started = self.clock()
            affected += self.db.write(planned)
            elapsed = self.clock() - started
            self.size.record(elapsed)
            self.batch_sizes.append(len(batch))
            position += len(batch)
            if self.pause > 0 and position < len(items):
                self.sleep(self.pause_after(elapsed))
        return affected

    def pause_after(self, elapsed: float) -> float:
        """Return the sleep after a transaction that took elapsed seconds.

        A transaction over the budget (a loaded machine, a slow disk) is followed by a pause as
        long as its excess. The longer it held the lock, the longer the lock is then free for
        a server write that waited meanwhile.
        """
        excess = elapsed - self.size.budget if self.size.budget > 0 else 0.0
        return max(self.pause, excess)
