#!/usr/bin/python
# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: acme_hk_report
short_description: Write acme2certifier's account or certificate report
version_added: 1.0.0
description:
  - Writes the account report or the certificate report of an acme2certifier server in the
    format of acme2certifier's own housekeeping (CSV or JSON, the same columns, quoting,
    dates and serial numbers), reading the database directly.
  - Rows are read in short pages and streamed to the file, so memory does not grow with the
    database and the running server is not blocked.
  - The file is replaced atomically and only when its content changes, so a run on an
    unchanged database returns C(changed=false).
  - Differences from acme2certifier's output are listed in the collection's
    C(docs/upstream-differences.md), for example rows sorted by id, real status names in the
    certificate report, and a header-only file when there are no rows.
author:
  - Acmeops Housekeeping Maintainers (@acmeops)
extends_documentation_fragment:
  - acmeops.housekeeping.database
  - acmeops.housekeeping.attributes
  - ansible.builtin.files
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  report:
    description:
      - V(accounts) lists every account with its orders, authorizations and challenges, one
        row per challenge.
      - V(certificates) lists every certificate row that has C(cert_raw), with its order and
        account, serial number and readable issue and expiry dates.
    type: str
    required: true
    choices: [accounts, certificates]
  format:
    description:
      - Output format.
    type: str
    choices: [csv, json]
    default: csv
  nested:
    description:
      - Group the account report into accounts, orders, authorizations and challenges.
      - Only with O(report=accounts) and O(format=json).
    type: bool
    default: false
  dest:
    description:
      - Path of the report file on the target. Its directory must exist.
      - Required unless O(return_content=true).
      - A new file gets mode C(0600) unless O(mode) says otherwise, because the reports
        contain account contacts.
    type: path
  return_content:
    description:
      - Return the report text in RV(content). Reports of large databases are big, so use
        this for small ones only.
    type: bool
    default: false
seealso:
  - module: acmeops.housekeeping.acme_hk_info
  - module: acmeops.housekeeping.acme_hk_cleanup
"""

EXAMPLES = r"""
- name: Write the certificate report as CSV
  acmeops.housekeeping.acme_hk_report:
    acme_srv_dir: /var/www/acme2certifier
    report: certificates
    dest: /var/lib/acme-reports/certificates.csv

- name: Write the nested account report, readable by the reporting group
  acmeops.housekeeping.acme_hk_report:
    database: /var/www/acme2certifier/acme_srv/acme_srv.db
    report: accounts
    format: json
    nested: true
    dest: /var/lib/acme-reports/accounts.json
    group: pki-audit
    mode: "0640"

- name: Get a small certificate report into a variable without writing a file
  acmeops.housekeeping.acme_hk_report:
    database: /srv/acme/acme_srv.db
    report: certificates
    format: json
    return_content: true
  register: certificate_report
"""

RETURN = r"""
dest:
  description: Path of the report file.
  returned: always
  type: str
  sample: /var/lib/acme-reports/certificates.csv
rows:
  description: Number of data rows read from the database (flat rows, also for nested reports).
  returned: success
  type: int
  sample: 42
columns:
  description: Column names of the report, in order.
  returned: success
  type: list
  elements: str
  sample: [certificate.id, certificate.name, certificate.serial]
checksum:
  description: SHA-1 checksum of the report content.
  returned: success
  type: str
  sample: 2aae6c35c94fcfb415dbe95f408b9ce91ee846ed
size:
  description: Size of the report in bytes.
  returned: success
  type: int
  sample: 4711
content:
  description: The report text.
  returned: when O(return_content=true)
  type: str
skipped_rows:
  description:
    - Values that could not be converted, with the table, row id and reason. The rows are
      still in the report, with the value as stored.
  returned: success
  type: list
  elements: dict
  sample: [{table: certificate, id: 7, reason: "issue_uts None or expire_uts 0 is not a number; dates read from cert_raw."}]
database:
  description: Path of the database that was read.
  returned: success
  type: str
dbversion:
  description: The C(dbversion) stored in the database's housekeeping table, if any.
  returned: success
  type: str
  sample: "0.46"
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.acmeops.housekeeping.plugins.module_utils._acmehk.ansible_glue import (
    common_argument_spec,
    run,
    settings_from,
)
from ansible_collections.acmeops.housekeeping.plugins.module_utils._acmehk.engine import run_report


def main() -> None:
    argument_spec = common_argument_spec()
    argument_spec.update(
        report=dict(type="str", required=True, choices=["accounts", "certificates"]),
        format=dict(type="str", default="csv", choices=["csv", "json"]),
        nested=dict(type="bool", default=False),
        dest=dict(type="path"),
        return_content=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True, add_file_common_args=True)

    def action() -> dict:
        params = module.params
        result = run_report(
            settings_from(module),
            report=params["report"],
            report_format=params["format"],
            nested=params["nested"],
            dest=params["dest"],
            check_mode=module.check_mode,
            return_content=params["return_content"],
        )

        # In check mode a missing dest is already reported as changed; an existing one can
        # still differ in owner, group or mode.
        if params["dest"] and os.path.exists(params["dest"]):
            file_args = module.load_file_common_arguments(params, path=params["dest"])
            result["changed"] = module.set_fs_attributes_if_different(file_args, result["changed"])
        return result

    run(module, action)


if __name__ == "__main__":
    main()
