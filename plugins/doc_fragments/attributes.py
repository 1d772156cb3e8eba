# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:

    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description:
      - In check mode the module runs the same selection as a real run, only reads, takes no
        write lock, and returns the same C(changed) status and counts.
  diff_mode:
    description:
      - In diff mode the result carries a C(diff) with the number of rows to handle before and
        after the run.
  idempotent:
    description:
      - A second run with the same options and the same O(now) changes nothing and returns
        C(changed=false), as long as nothing else changed the database in between.
"""
