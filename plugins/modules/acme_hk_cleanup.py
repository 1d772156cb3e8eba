#!/usr/bin/python
# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: acme_hk_cleanup
short_description: Clean up expired certificates and old nonces in an acme2certifier database
version_added: 1.0.0
description:
  - Applies acme2certifier's certificate cleanup, nonce cleanup and certificate dates
    back-fill directly to its database, in batched short transactions while the server keeps
    running.
  - Certificate cleanup follows acme2certifier 0.46.3. A certificate whose C(expire_uts) is at
    or before the cutoff is cleared. When C(expire_uts) is 0 the expiry is read from
    C(cert_raw). A row with only a CSR is cleared once it is 14 days older than the cutoff.
    A row with neither a certificate nor a CSR is always cleared.
  - Rows that cannot be judged (malformed C(cert_raw), a C(created_at) that is not a date,
    text in a date column) are left unchanged and listed in RV(skipped_rows) with the reason.
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
      - What to clean up.
      - V(certificates) blanks or deletes expired certificates, see O(purge).
      - V(nonces) deletes nonces older than the cutoff minus the nonce validity.
      - V(certificate_dates) fills C(issue_uts) and C(expire_uts) (and C(serial), C(aki),
        C(renewal_info)) from C(cert_raw) where both dates are 0, as acme2certifier's
        dates update does; it runs before V(certificates).
    type: list
    elements: str
    choices: [certificates, nonces, certificate_dates]
    default: [certificates]
  purge:
    description:
      - V(false) blanks the certificate like acme2certifier. C(cert) is replaced by the
        text "removed by certificates.cleanup() on" followed by the cutoff, and C(cert_raw) and
        the rest of the row are kept.
      - V(true) deletes the certificate rows, including rows blanked earlier.
    type: bool
    default: false
  nonce_validity:
    description:
      - Seconds a nonce stays valid. Defaults to C([Nonce] validity) in C(acme_srv.cfg), or
        86400 when it is not set. A value of 0 or less disables nonce cleanup, as in
        acme2certifier.
    type: int
  backup:
    description:
      - Before the first change, copy the database with SQLite's online backup to a file
        beside it named C(<database>.<UTC time>.<pid>.bak), with mode C(0600).
      - No copy is made when there is nothing to change, or in check mode.
    type: bool
    default: false
  backup_keep:
    description:
      - After a successful backup, delete the oldest backups of this database so that this many
        remain. Only files named like the backups this module writes are deleted.
      - Unset keeps every backup.
    type: int
    version_added: 1.0.0
  report_dest:
    description:
      - Write the certificate rows that cleanup is about to blank or delete to this file,
        before anything is changed. Needs V(certificates) in O(targets).
      - Written only when there are rows to clean, so an idempotent second run leaves the
        file of the first run alone.
    type: path
  report_format:
    description:
      - Format of O(report_dest).
    type: str
    choices: [csv, json]
    default: csv
seealso:
  - module: acmeops.housekeeping.acme_hk_invalidate
  - module: acmeops.housekeeping.acme_hk_info
"""

EXAMPLES = r"""
- name: Blank certificates that expired more than 30 days ago
  acmeops.housekeeping.acme_hk_cleanup:
    acme_srv_dir: /var/www/acme2certifier
    grace_period: 30d

- name: Back-fill dates, delete expired certificates and old nonces, with a backup and a report
  acmeops.housekeeping.acme_hk_cleanup:
    database: /var/www/acme2certifier/acme_srv/acme_srv.db
    targets: [certificate_dates, certificates, nonces]
    purge: true
    backup: true
    report_dest: /var/lib/acme-reports/purged-certificates.csv
  become: true
  become_user: www-data
"""

RETURN = r"""
certificates:
  description: Certificate cleanup result.
  returned: when V(certificates) is in O(targets)
  type: dict
  contains:
    count:
      description: Rows blanked or deleted (in check mode, rows that would be).
      type: int
      sample: 12
    names:
      description: Names of the first 100 rows by id.
      type: list
      elements: str
    names_truncated:
      description: Whether more rows were handled than RV(certificates.names) lists.
      type: bool
    skipped:
      description: Rows left unchanged because they could not be judged, with the reason.
      type: list
      elements: dict
nonces:
  description: Nonce cleanup result, with the same keys as RV(certificates).
  returned: when V(nonces) is in O(targets)
  type: dict
certificate_dates:
  description: Dates back-fill result, with the same keys as RV(certificates).
  returned: when V(certificate_dates) is in O(targets)
  type: dict
backup_file:
  description: Path of the backup copy.
  returned: when O(backup=true) and something was changed
  type: str
  sample: /var/www/acme2certifier/acme_srv/acme_srv.db.20261204T101500Z.4242.bak
report_dest:
  description: Path of the cleanup report.
  returned: when O(report_dest) is set and rows were selected
  type: str
cutoff:
  description: The cutoff used, O(now) minus O(grace_period), in epoch seconds.
  returned: success
  type: int
  sample: 1796342400
cutoff_iso:
  description: The cutoff as an ISO 8601 UTC time.
  returned: success
  type: str
  sample: "2026-12-04T00:00:00Z"
now:
  description: The reference time used, in epoch seconds.
  returned: success
  type: int
nonce_validity:
  description: The nonce validity used, in seconds.
  returned: success
  type: int
skipped_rows:
  description: All rows left unchanged because they could not be processed, with table, id, name and reason.
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
from ansible_collections.acmeops.housekeeping.plugins.module_utils._acmehk.engine import run_cleanup


def main() -> None:
    argument_spec = common_argument_spec()
    argument_spec.update(
        targets=dict(
            type="list", elements="str", default=["certificates"],
            choices=["certificates", "nonces", "certificate_dates"],
        ),
        purge=dict(type="bool", default=False),
        nonce_validity=dict(type="int"),
        backup=dict(type="bool", default=False),
        backup_keep=dict(type="int"),
        report_dest=dict(type="path"),
        report_format=dict(type="str", default="csv", choices=["csv", "json"]),
        force=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)

    def action() -> dict:
        params = module.params
        return run_cleanup(
            settings_from(module),
            targets=params["targets"],
            check_mode=module.check_mode,
            purge=params["purge"],
            nonce_validity=params["nonce_validity"],
            backup=params["backup"],
            report_dest=params["report_dest"],
            report_format=params["report_format"],
            force=params["force"],
            backup_keep=params["backup_keep"],
        )

    run(module, action)


if __name__ == "__main__":
    main()
