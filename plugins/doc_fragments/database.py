# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:

    DOCUMENTATION = r"""
options:
  database:
    description:
      - Path of the acme2certifier SQLite database (C(acme_srv.db)) on the target.
      - Takes precedence over the database that O(acme_srv_dir) or O(config) point to.
      - The file must exist; the modules never create a database.
    type: path
  acme_srv_dir:
    description:
      - The acme2certifier installation directory, either its root (for example
        C(/var/www/acme2certifier) or C(/opt/acme2certifier)) or its C(acme_srv/) folder.
      - The module looks for C(acme_srv.cfg) in the directory itself, in C(acme_srv/),
        in C(volume/) (Docker) and in C(acme/) (releases before 0.17), and reads the database
        path from C([DBhandler] dbfile). Without that setting it uses the first existing
        C(acme_srv.db) in the same places.
    type: path
  config:
    description:
      - Explicit path of C(acme_srv.cfg). Used to find the database and the nonce validity.
    type: path
  now:
    description:
      - The reference time of the run, as epoch seconds or as ISO 8601 (V(2026-12-04T00:00:00Z),
        or with an offset such as V(+02:00)). A time without an offset is UTC.
      - Defaults to the current time, read when the module runs.
      - Fix it to get repeatable results, for example in tests or when the same run is replayed
        in check mode first.
    type: raw
  grace_period:
    description:
      - Moves the cutoff to O(now) minus this duration, so rows expire this much later than
        acme2certifier would expire them.
      - Whole seconds, or a number with one unit of V(s), V(m), V(h), V(d) or V(w), such as
        V(72h) or V(30d). Negative values are rejected.
      - The cutoff replaces acme2certifier's reference time in every rule, including the
        14-day age of CSR-only certificate rows, the nonce threshold and the date written
        into blanked certificates.
    type: raw
    default: 0
  busy_timeout:
    description:
      - Seconds to wait for a lock that the running acme2certifier server (or another
        housekeeping run) holds before the task fails.
    type: float
    default: 10.0
  batch_size:
    description:
      - Rows per read page and per write transaction. Smaller batches hold locks for a
        shorter time; larger batches finish sooner.
    type: int
    default: 500
notes:
  - Only the acme2certifier C(wsgi) database handler on SQLite is supported by this release.
  - The modules need only the Python standard library on the target.
seealso:
  - name: acme2certifier housekeeping
    description: The upstream housekeeping class whose rules these modules follow.
    link: https://github.com/grindsa/acme2certifier/blob/master/docs/housekeeping.md
"""

    FORCE = r"""
options:
  force:
    description:
      - Change a database whose C(dbversion) is newer than the newest acme2certifier schema
        this collection knows (0.46). Without it such a run fails before changing anything.
    type: bool
    default: false
"""
