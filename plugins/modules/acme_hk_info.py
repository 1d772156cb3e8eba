#!/usr/bin/python
# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: acme_hk_info
short_description: Read facts about an acme2certifier database and its pending housekeeping
version_added: 1.0.0
description:
  - Returns the database handler, the schema (tables and columns), the stored C(dbversion),
    the row count of every table, and how many rows each housekeeping operation would touch
    at O(now).
  - Only reads; never changes the database.
author:
  - Acmeops Housekeeping Maintainers (@acmeops)
extends_documentation_fragment:
  - acmeops.housekeeping.database
  - acmeops.housekeeping.attributes
attributes:
  check_mode:
    support: full
    details:
      - The module never changes anything, so check mode returns the same result.
  diff_mode:
    support: N/A
  idempotent:
    support: full
options:
  nonce_validity:
    description:
      - Seconds a nonce stays valid, for the pending nonce count. Defaults to C([Nonce]
        validity) in C(acme_srv.cfg), or 86400.
    type: int
  status_file:
    description:
      - Status file of the scheduled housekeeping job that the role C(acmeops.housekeeping.acme_hk)
        installs. When set, its content is returned in RV(scheduled_run).
      - A missing file is not an error; RV(scheduled_run) is then null.
    type: path
seealso:
  - module: acmeops.housekeeping.acme_hk_cleanup
  - module: acmeops.housekeeping.acme_hk_invalidate
  - module: acmeops.housekeeping.acme_hk_report
"""

EXAMPLES = r"""
- name: Show what housekeeping would do now
  acmeops.housekeeping.acme_hk_info:
    acme_srv_dir: /var/www/acme2certifier
  register: acme_facts

- name: Warn when the nonce table needs cleaning
  ansible.builtin.debug:
    msg: "{{ acme_facts.pending.nonces }} nonces are due for cleanup"
  when: acme_facts.pending.nonces > 10000
"""

RETURN = r"""
handler:
  description: The acme2certifier database handler of the database.
  returned: success
  type: str
  sample: wsgi
dbversion:
  description: The C(dbversion) stored in the housekeeping table, or null before 0.11.
  returned: success
  type: str
  sample: "0.46"
known_dbversion:
  description: The newest acme2certifier schema version this collection supports.
  returned: success
  type: str
  sample: "0.46"
dbversion_newer_than_known:
  description: Whether changing modules will refuse to run without O(acmeops.housekeeping.acme_hk_cleanup#module:force).
  returned: success
  type: bool
tables:
  description: Columns of each acme2certifier table, in storage order.
  returned: success
  type: dict
row_counts:
  description: Number of rows per table.
  returned: success
  type: dict
  sample: {account: 3, orders: 9, certificate: 6, nonce: 13}
pending:
  description: Rows each operation would touch at the cutoff.
  returned: success
  type: dict
  contains:
    orders:
      description: Orders that order invalidation would set to invalid.
      type: int
    authorizations:
      description: Authorizations that would be set to expired.
      type: int
    certificate_dates:
      description: Certificates whose dates the back-fill would set.
      type: int
    certificates:
      description: Certificates that cleanup would blank.
      type: int
    certificates_purge:
      description: Certificates that cleanup with purge would delete (includes blanked rows).
      type: int
    nonces:
      description: Nonces that nonce cleanup would delete.
      type: int
cutoff:
  description: The cutoff used, in epoch seconds.
  returned: success
  type: int
database:
  description: Path of the database that was read.
  returned: success
  type: str
config:
  description: Path of the acme_srv.cfg that was read, if any.
  returned: success
  type: str
scheduled_run:
  description:
    - Content of O(status_file) (last start, last finish, state, counts, last error), or null
      when the file does not exist.
  returned: when O(status_file) is set
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.acmeops.housekeeping.plugins.module_utils._acmehk.ansible_glue import (
    common_argument_spec,
    run,
    settings_from,
)
from ansible_collections.acmeops.housekeeping.plugins.module_utils._acmehk.engine import gather_info, read_status_file


def main() -> None:
    argument_spec = common_argument_spec()
    argument_spec.update(nonce_validity=dict(type="int"), status_file=dict(type="path"))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)

    def action() -> dict:
        result = gather_info(settings_from(module), nonce_validity=module.params["nonce_validity"])
        if module.params["status_file"]:
            result["scheduled_run"] = read_status_file(module.params["status_file"])
        return result

    run(module, action)


if __name__ == "__main__":
    main()
