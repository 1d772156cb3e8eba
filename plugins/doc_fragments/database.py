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
      - Explicit path of C(acme_srv.cfg). Used to find the database, and by
        M(acmeops.housekeeping.acme_hk_cleanup) and M(acmeops.housekeeping.acme_hk_info) for the
        nonce validity.
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
        housekeeping run) keeps before the task fails.
    type: float
    default: 10.0
  batch_size:
    description:
      - Rows per read page, and rows of the first write transaction of each operation.
      - Later write transactions grow and shrink with O(batch_time), but never get smaller
        than O(batch_size). Lower it when even this many rows take longer than
        O(batch_time) to write.
      - Each read statement examines the rows of a range of at least this many ids, so a
        selective filter never scans a whole table in one statement.
    type: int
    default: 500
  batch_time:
    description:
      - Seconds that one write transaction or one read statement should take at most, which
        bounds how long the acme2certifier server has to wait for a lock.
      - After a write transaction that took less than half of this time the next one gets
        twice the rows, up to 64 times O(batch_size). After one that took longer than this
        time, the next one gets half the rows, down to O(batch_size). Read statements adapt
        the id range they examine in the same way.
      - Larger values finish sooner because fewer commits are needed, and let the server wait
        longer. V(0) turns the adaptation off, so every write transaction has exactly
        O(batch_size) rows and every read examines O(batch_size) ids.
      - The time includes any wait for the lock at the start of a transaction, so a busy
        server makes the batches smaller.
    type: float
    default: 0.05
  batch_pause:
    description:
      - Seconds to sleep after each write transaction, so that the acme2certifier server can
        take the write lock between two transactions of a long run.
      - SQLite's default busy handler (C(sqliteDefaultBusyCallback) in SQLite's C(main.c))
        retries a locked write after 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50 and then every
        100 ms, so without a pause a waiting server seldom finds the lock free between
        back-to-back transactions.
      - After a transaction that took longer than O(batch_time), the pause is as long as the
        excess, if that is longer than O(batch_pause).
      - Larger values let the server in sooner and slow the run by this time per
        transaction. V(0) writes without pauses, the fastest way when no server runs.
    type: float
    default: 0.01
  db_handler:
    description:
      - The acme2certifier database handler whose tables the database contains.
      - V(auto) reads C([DBhandler] handler) from C(acme_srv.cfg) to find the database, and
        otherwise distinguishes the handlers by their tables (C(orders) for V(wsgi),
        C(acme_srv_order) for V(django)).
    type: str
    choices: [auto, wsgi, django]
    default: auto
  db_engine:
    description:
      - The database server of a Django installation. V(sqlite) uses O(database) as the path.
      - When unset, the engine comes from O(database) (SQLite), or for the Django handler from
        C(DATABASES) in the Django settings file found below O(acme_srv_dir).
    type: str
    choices: [sqlite, postgresql, mysql]
  db_host:
    description:
      - Host name or IP address of the PostgreSQL or MariaDB/MySQL server.
      - A path names a Unix socket instead, as in Django's settings; for PostgreSQL the
        directory of the socket (for example V(/var/run/postgresql)), for MariaDB/MySQL the
        socket file (for example V(/run/mysqld/mysqld.sock)).
    type: str
    aliases: [login_host]
  db_port:
    description:
      - TCP port of the database server. Defaults to the driver's default (5432 or 3306).
    type: int
    aliases: [login_port]
  db_name:
    description:
      - Name of the database that contains acme2certifier's C(acme_srv_*) tables.
    type: str
    aliases: [login_db]
  db_user:
    description:
      - User to connect as. Check mode needs only C(SELECT) rights; changing runs need
        C(UPDATE) and C(DELETE) on the C(acme_srv_*) tables.
    type: str
    aliases: [login_user]
  db_password:
    description:
      - Password of O(db_user). It never appears in results, logs or messages.
    type: str
    aliases: [login_password]
  connect_timeout:
    description:
      - Seconds to wait for the database server to accept the connection.
    type: float
    default: 30.0
  ssl_mode:
    description:
      - TLS mode of a PostgreSQL connection, as libpq names it.
    type: str
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
  ca_cert:
    description:
      - CA certificate file that verifies the database server's TLS certificate.
    type: path
    aliases: [ssl_rootcert]
  client_cert:
    description:
      - Client certificate file for TLS client authentication.
    type: path
    aliases: [ssl_cert]
  client_key:
    description:
      - Private key file of O(client_cert).
    type: path
    aliases: [ssl_key]
  django_settings:
    description:
      - Path of the Django settings file whose C(DATABASES) names the database. By default
        the module looks below O(acme_srv_dir) (C(acme2certifier/settings.py),
        C(django_project/settings.py), C(volume/settings.py)).
      - The file is read as text and C(DATABASES) must be a literal; the file is never run.
    type: path
requirements:
  - For PostgreSQL, C(psycopg) 3 or C(psycopg2) on the target
  - For MariaDB or MySQL, C(PyMySQL) or C(mysqlclient) on the target
notes:
  - SQLite databases, of the wsgi or the Django handler, need only the Python standard library on
    the target.
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
