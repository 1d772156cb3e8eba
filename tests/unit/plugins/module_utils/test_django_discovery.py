# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Finding a Django installation's database from acme_srv.cfg and its settings file."""

from __future__ import annotations

import pytest

from ansible_collections.acmeops.housekeeping.plugins.module_utils._acmehk import engine
from ansible_collections.acmeops.housekeeping.plugins.module_utils._acmehk.config import read_django_databases
from ansible_collections.acmeops.housekeeping.plugins.module_utils._acmehk.errors import ConfigError

LITERAL_SETTINGS = """
import os
BASE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATABASES = {
    'default': {
        'ENGINE': 'django.db.backends.postgresql',
        'NAME': 'acme2certifier',
        'USER': 'acme',
        'PASSWORD': 'secret',
        'HOST': 'db.internal',
        'PORT': '5433',
    }
}
"""


def _installation(tmp_path, settings_text, handler="django"):
    root = tmp_path / "acme2certifier"
    (root / "acme_srv").mkdir(parents=True)
    (root / "acme_srv" / "acme_srv.cfg").write_text(f"[DBhandler]\nhandler: {handler}\n")
    (root / "acme2certifier").mkdir()
    (root / "acme2certifier" / "settings.py").write_text(settings_text)
    return root


def test_literal_databases_read(tmp_path):
    root = _installation(tmp_path, LITERAL_SETTINGS)
    database = read_django_databases(str(root / "acme2certifier" / "settings.py"))
    assert database["engine"] == "postgresql"
    assert database["NAME"] == "acme2certifier"
    assert database["PORT"] == "5433"


def test_resolve_target_from_acme_srv_dir(tmp_path):
    root = _installation(tmp_path, LITERAL_SETTINGS)
    installation, server = engine.resolve_target(engine.Settings(acme_srv_dir=str(root)))
    assert server is not None
    assert server.engine == "postgresql"
    assert server.host == "db.internal"
    assert server.port == 5433
    assert server.user == "acme"
    assert server.password == "secret"
    assert "secret" not in server.describe()
    assert "DATABASES in" in installation.database_source


def test_options_override_settings(tmp_path):
    root = _installation(tmp_path, LITERAL_SETTINGS)
    _installation_unused, server = engine.resolve_target(
        engine.Settings(acme_srv_dir=str(root), db_host="127.0.0.1", db_port=6543, db_user="other")
    )
    assert server.host == "127.0.0.1"
    assert server.port == 6543
    assert server.user == "other"
    assert server.name == "acme2certifier"


def test_non_literal_databases_rejected(tmp_path):
    settings = "import environ\nenv = environ.Env()\nDATABASES = {'default': env.db()}\n"
    root = _installation(tmp_path, settings)
    with pytest.raises(ConfigError) as error:
        engine.resolve_target(engine.Settings(acme_srv_dir=str(root)))
    assert "is not a literal" in error.value.msg
    assert "db_engine" in error.value.msg


def test_missing_databases_rejected(tmp_path):
    root = _installation(tmp_path, "DEBUG = False\n")
    with pytest.raises(ConfigError) as error:
        engine.resolve_target(engine.Settings(acme_srv_dir=str(root)))
    assert "do not assign DATABASES" in error.value.msg


def test_django_sqlite_path(tmp_path):
    settings = "DATABASES = {'default': {'ENGINE': 'django.db.backends.sqlite3', 'NAME': '/srv/a2c/db.sqlite3'}}\n"
    root = _installation(tmp_path, settings)
    installation, server = engine.resolve_target(engine.Settings(acme_srv_dir=str(root)))
    assert server is None
    assert installation.database == "/srv/a2c/db.sqlite3"


def test_wsgi_handler_keeps_sqlite_lookup(tmp_path):
    root = _installation(tmp_path, LITERAL_SETTINGS, handler="wsgi")
    (root / "acme_srv" / "acme_srv.db").write_bytes(b"")
    installation, server = engine.resolve_target(engine.Settings(acme_srv_dir=str(root)))
    assert server is None
    assert installation.database.endswith("acme_srv.db")


def test_unsupported_engine_rejected(tmp_path):
    settings = "DATABASES = {'default': {'ENGINE': 'mssql', 'NAME': 'x'}}\n"
    root = _installation(tmp_path, settings)
    with pytest.raises(ConfigError) as error:
        engine.resolve_target(engine.Settings(acme_srv_dir=str(root)))
    assert "'mssql'" in error.value.msg
