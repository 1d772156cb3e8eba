# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Callback plugin of the differential tests: file copies between tasks, and how each task ended.

A copy task per snapshot took about a second each (ansible.builtin.copy, measured on a 2-core
test machine). This callback copies the files after a task instead, in the controller process,
before the linear strategy starts the next task. The playbook runs on localhost, so the controller's files are the
target's files.
"""

from __future__ import annotations

import json
import os
import shutil

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: differential_steps
type: aggregate
short_description: Copy files after tasks and save how each task ended
description:
  - Reads the JSON file named by the environment variable C(ACMEOPS_DIFFERENTIAL_PLAN). Its key
    C(after) maps a task number, the first word of the task name, to a list of
    C([source, target]) file copies to make when that task ends. Its key C(outcomes) names the
    file that receives, when the play ends, a JSON list with the callback that Ansible called
    for each numbered task, V(ok), V(failed) or V(skipped), in task order.
  - Used only by the differential tests of acmeops.housekeeping.
"""

PLAN_VARIABLE = "ACMEOPS_DIFFERENTIAL_PLAN"


class CallbackModule(CallbackBase):
    """Copy files after numbered tasks and record how Ansible judged each of them."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "differential_steps"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self.plan = {"after": {}, "outcomes": None}
        path = os.environ.get(PLAN_VARIABLE)
        if path:
            with open(path, encoding="utf-8") as handle:
                self.plan = json.load(handle)
        self.outcomes = {}

    def _record(self, result, outcome: str) -> None:
        number = result.task_name.split(" ", 1)[0]
        if not number.isdigit():
            return
        self.outcomes[int(number)] = outcome
        for source, target in self.plan["after"].get(number, []):
            shutil.copyfile(source, target)

    def v2_runner_on_ok(self, result) -> None:
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False) -> None:
        self._record(result, "failed")

    def v2_runner_on_skipped(self, result) -> None:
        self._record(result, "skipped")

    def v2_playbook_on_stats(self, stats) -> None:
        if not self.plan["outcomes"]:
            return
        ordered = [self.outcomes.get(number) for number in range(max(self.outcomes, default=-1) + 1)]
        with open(self.plan["outcomes"], "w", encoding="utf-8") as handle:
            json.dump(ordered, handle)
