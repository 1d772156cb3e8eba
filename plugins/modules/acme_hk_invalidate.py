#!/usr/bin/python
# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: acme_hk_invalidate
short_description: Invalidate expired orders and expire authorizations in an acme2certifier database
version_added: 1.0.0
description:
  - Applies acme2certifier 0.46.3's order invalidation and authorization expiry directly to its
    database, in batched short transactions while the server keeps running.
  - Orders whose status id is above 1 (anything but invalid) and whose C(expires) is at or
    before the cutoff are set to C(invalid). That includes completed (C(valid)) orders and
    orders with C(expires=0), as in acme2certifier.
  - Authorizations whose C(expires) is at or before the cutoff, other than 0, and whose status
    is not C(expired) are set to C(expired). Authorizations never fetched by a client have no
    C(expires) and are never selected.
author:
  - Acmeops Housekeeping Maintainers (@acmeops)
extends_documentation_fragment:
  - acmeops.housekeeping.database
  - acmeops.housekeeping.database.FORCE
  - acmeops.housekeeping.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: partial
    details:
      - The diff contains row counts per target, not the rows themselves.
  idempotent:
    support: full
    details:
      - Idempotent for a fixed O(now). With the default O(now) a later run can find rows that
        have expired in the meantime.
options:
  targets:
    description:
      - What to invalidate.
    type: list
    elements: str
    choices: [orders, authorizations]
    default: [orders, authorizations]
  report_dir:
    description:
      - Write the rows about to change, before they are changed, to one file per target in
        this existing directory, named C(<target>_invalidate_<cutoff>.<format>), with
        acme2certifier's report columns.
      - A file is written only for a target with rows to change.
    type: path
  report_format:
    description:
      - Format of the files in O(report_dir).
    type: str
    choices: [csv, json]
    default: csv
seealso:
  - module: acmeops.housekeeping.acme_hk_cleanup
  - module: acmeops.housekeeping.acme_hk_info
"""

EXAMPLES = r"""
- name: Invalidate expired orders and authorizations
  acmeops.housekeeping.acme_hk_invalidate:
    acme_srv_dir: /var/www/acme2certifier

- name: Only orders, three days after expiry, with a CSV record of what changed
  acmeops.housekeeping.acme_hk_invalidate:
    database: /opt/acme2certifier/acme_srv/acme_srv.db
    targets: [orders]
    grace_period: 72h
    report_dir: /var/lib/acme-reports
"""

RETURN = r"""
orders:
  description: Order invalidation result.
  returned: when V(orders) is in O(targets)
  type: dict
  contains:
    count:
      description: Orders set to invalid (in check mode, orders that would be).
      type: int
      sample: 3
    names:
      description: Names of the first 100 orders by id.
      type: list
      elements: str
    names_truncated:
      description: Whether more orders were changed than RV(orders.names) lists.
      type: bool
    skipped:
      description: Rows with text in C(expires), which no rule can compare, with the reason.
      type: list
      elements: dict
authorizations:
  description: Authorization expiry result, with the same keys as RV(orders).
  returned: when V(authorizations) is in O(targets)
  type: dict
report_files:
  description: Report file per target.
  returned: success
  type: dict
  sample: {orders: /var/lib/acme-reports/orders_invalidate_20261204T000000Z.csv}
cutoff:
  description: The cutoff used, O(now) minus O(grace_period), in epoch seconds.
  returned: success
  type: int
cutoff_iso:
  description: The cutoff as an ISO 8601 UTC time.
  returned: success
  type: str
now:
  description: The reference time used, in epoch seconds.
  returned: success
  type: int
skipped_rows:
  description: All rows left unchanged because they could not be processed.
  returned: success
  type: list
  elements: dict
dbversion:
  description: The C(dbversion) stored in the database.
  returned: success
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.acmeops.housekeeping.plugins.module_utils._acmehk.ansible_glue import (
    common_argument_spec,
    run,
    settings_from,
)
from ansible_collections.acmeops.housekeeping.plugins.module_utils._acmehk.engine import run_invalidate


def main() -> None:
    argument_spec = common_argument_spec()
    argument_spec.update(
        targets=dict(
            type="list", elements="str", default=["orders", "authorizations"],
            choices=["orders", "authorizations"],
        ),
        report_dir=dict(type="path"),
        report_format=dict(type="str", default="csv", choices=["csv", "json"]),
        force=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)

    def action() -> dict:
        params = module.params
        return run_invalidate(
            settings_from(module),
            targets=params["targets"],
            check_mode=module.check_mode,
            report_dir=params["report_dir"],
            report_format=params["report_format"],
            force=params["force"],
        )

    run(module, action)


if __name__ == "__main__":
    main()
