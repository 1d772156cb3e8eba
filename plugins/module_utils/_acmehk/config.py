# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Find acme_srv.cfg and the SQLite database of an acme2certifier installation."""

from __future__ import annotations

import ast
import configparser
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from .errors import ConfigError

CONFIG_NAME = "acme_srv.cfg"
DATABASE_NAME = "acme_srv.db"
DEFAULT_NONCE_VALIDITY = 86400

# Relative places of acme_srv.cfg below an installation directory, most specific first:
# the acme_srv/ folder itself, the deb/rpm/manual layout, the Docker volume, and the layout
# of releases before 0.17 (acme/).
_CONFIG_CANDIDATES = (
    CONFIG_NAME,
    os.path.join("acme_srv", CONFIG_NAME),
    os.path.join("volume", CONFIG_NAME),
    os.path.join("acme", CONFIG_NAME),
)
_DATABASE_CANDIDATES = (
    DATABASE_NAME,
    os.path.join("acme_srv", DATABASE_NAME),
    os.path.join("volume", DATABASE_NAME),
    os.path.join("acme", DATABASE_NAME),
)


def _new_parser() -> configparser.ConfigParser:
    """Build a parser that reads acme_srv.cfg like acme2certifier: no interpolation, case kept."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    return parser


@dataclass
class Installation:
    """Paths of the configuration and the database of one acme2certifier instance."""

    database: str
    config_path: Optional[str] = None
    settings: configparser.ConfigParser = field(default_factory=_new_parser)
    database_source: str = "option"

    def option(self, section: str, name: str) -> Optional[str]:
        """Return a raw value from acme_srv.cfg, or None when it is not set."""
        if not self.settings.has_section(section) or not self.settings.has_option(section, name):
            return None
        return self.settings.get(section, name)

    def integer_option(self, section: str, name: str, default: int) -> int:
        """Return an integer value from acme_srv.cfg, rejecting what acme2certifier rejects."""
        raw = self.option(section, name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return int(raw.strip())
        except ValueError:
            raise ConfigError(
                f"Invalid [{section}] {name} = {raw!r} in {self.config_path}: it must be a whole "
                f"number of seconds. Fix the file or set the value with the module option."
            ) from None


def read_config(path: str) -> configparser.ConfigParser:
    """Parse one acme_srv.cfg file."""
    parser = _new_parser()
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as exc:
        raise ConfigError(
            f"Cannot read the acme2certifier configuration {path}: {exc.strerror}. "
            "Check the config or acme_srv_dir option and the file permissions."
        ) from exc
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"The acme2certifier configuration {path} is not a valid INI file: {exc}. "
            "Fix the file, or give the database path with the database option."
        ) from exc
    return parser


def installation_root(acme_srv_dir: Optional[str], config_path: Optional[str]) -> str:
    """Return the installation root, one level above an acme_srv/, acme/ or volume/ folder."""
    base = acme_srv_dir or os.path.dirname(os.path.abspath(config_path or "."))
    base = os.path.abspath(base)
    if os.path.basename(base.rstrip(os.sep)) in ("acme_srv", "acme", "volume"):
        return os.path.dirname(base.rstrip(os.sep))
    return base


def _first_existing(base: str, candidates: tuple) -> Optional[str]:
    for relative in candidates:
        path = os.path.join(base, relative)
        if os.path.isfile(path):
            return path
    return None


def locate(
    database: Optional[str] = None,
    acme_srv_dir: Optional[str] = None,
    config: Optional[str] = None,
    need_database: bool = True,
) -> Installation:
    """Resolve the database path from the options, the way acme2certifier finds it."""
    if not (database or acme_srv_dir or config):
        raise ConfigError(
            "No database given. Set database to the path of acme_srv.db, or acme_srv_dir to the "
            "acme2certifier installation, or config to its acme_srv.cfg."
        )

    if acme_srv_dir is not None and not os.path.isdir(acme_srv_dir):
        raise ConfigError(
            f"acme_srv_dir {acme_srv_dir} is not a directory. Give the acme2certifier installation "
            "directory (for example /var/www/acme2certifier) or its acme_srv/ folder."
        )

    config_path = config
    if config_path is None and acme_srv_dir is not None:
        config_path = _first_existing(acme_srv_dir, _CONFIG_CANDIDATES)
    if config_path is not None and not os.path.isfile(config_path):
        raise ConfigError(
            f"The acme2certifier configuration {config_path} does not exist. Fix the config "
            "option, or leave it unset so the module looks in acme_srv_dir."
        )

    settings = read_config(config_path) if config_path else _new_parser()
    installation = Installation(database="", config_path=config_path, settings=settings)

    if database or not need_database:
        installation.database = database or ""
        return installation

    dbfile = installation.option("DBhandler", "dbfile")
    if dbfile and dbfile.strip():
        dbfile = dbfile.strip()
        if not os.path.isabs(dbfile):
            # acme2certifier resolves a relative dbfile against its working directory, which is
            # the installation root under the shipped web server configurations.
            dbfile = os.path.join(installation_root(acme_srv_dir, config_path), dbfile)
        installation.database = dbfile
        installation.database_source = f"[DBhandler] dbfile in {config_path}"
        return installation

    searched: List[str] = []
    bases = [acme_srv_dir] if acme_srv_dir else []
    if config_path:
        bases.append(os.path.dirname(os.path.abspath(config_path)))
    for base in bases:
        found = _first_existing(base, _DATABASE_CANDIDATES)
        if found:
            installation.database = found
            installation.database_source = "default location"
            return installation
        searched.extend(os.path.join(base, relative) for relative in _DATABASE_CANDIDATES)

    raise ConfigError(
        "Cannot find the acme2certifier database: no [DBhandler] dbfile is set"
        + (f" in {config_path}" if config_path else "")
        + " and none of these files exists: "
        + ", ".join(searched)
        + ". Give the path with the database option.",
        searched=searched,
    )


# Places of the Django settings module below an installation root: the classic Django layout,
# the layout of the PyPI package, and the Docker volume.
_DJANGO_SETTINGS_CANDIDATES = (
    os.path.join("acme2certifier", "settings.py"),
    os.path.join("django_project", "settings.py"),
    os.path.join("acme2certifier", "django_project", "settings.py"),
    os.path.join("volume", "settings.py"),
    "settings.py",
)

_DJANGO_ENGINES = {
    "django.db.backends.postgresql": "postgresql",
    "django.db.backends.postgresql_psycopg2": "postgresql",
    "django.db.backends.mysql": "mysql",
    "django.db.backends.sqlite3": "sqlite",
}


def configured_handler(installation: Installation) -> Optional[str]:
    """Return the database handler that acme_srv.cfg selects, or None when it selects none."""
    for option in ("handler", "handler_module"):
        value = (installation.option("DBhandler", option) or "").strip().lower()
        if "django" in value:
            return "django"
        if "wsgi" in value:
            return "wsgi"
    return None


def find_django_settings(acme_srv_dir: Optional[str], config_path: Optional[str]) -> Optional[str]:
    """Return the path of the Django settings module of an installation, if one exists."""
    if not (acme_srv_dir or config_path):
        return None
    root = installation_root(acme_srv_dir, config_path)
    return _first_existing(root, _DJANGO_SETTINGS_CANDIDATES)


def read_django_databases(path: str) -> Dict[str, Any]:
    """Read DATABASES['default'] from a Django settings file as a literal, without running it."""
    try:
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read(), filename=path)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ConfigError(
            f"Cannot read the Django settings {path}: {exc}. Give the connection with db_engine, "
            "db_host, db_name, db_user and db_password instead.",
            settings=path,
        ) from exc

    value_node = None
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if any(isinstance(target, ast.Name) and target.id == "DATABASES" for target in targets):
            value_node = node.value
    if value_node is None:
        raise ConfigError(
            f"The Django settings {path} do not assign DATABASES. Give the connection with "
            "db_engine, db_host, db_name, db_user and db_password instead.",
            settings=path,
        )
    try:
        databases = ast.literal_eval(value_node)
    except ValueError:
        raise ConfigError(
            f"DATABASES in {path} (line {value_node.lineno}) is not a literal: it computes values, "
            "for example from environment variables, and the module does not run the file. Give "
            "the connection with db_engine, db_host, db_name, db_user and db_password instead.",
            settings=path,
        ) from None
    default = databases.get("default") if isinstance(databases, dict) else None
    if not isinstance(default, dict):
        raise ConfigError(
            f"DATABASES in {path} has no 'default' entry. Give the connection with db_engine, "
            "db_host, db_name, db_user and db_password instead.",
            settings=path,
        )
    engine = _DJANGO_ENGINES.get(str(default.get("ENGINE", "")))
    if engine is None:
        raise ConfigError(
            f"The Django database engine {default.get('ENGINE')!r} in {path} is not supported. "
            "Supported: PostgreSQL, MySQL/MariaDB and SQLite.",
            settings=path,
        )
    result = dict(default)
    result["engine"] = engine
    if engine == "sqlite" and result.get("NAME") and not os.path.isabs(str(result["NAME"])):
        result["NAME"] = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(path))), str(result["NAME"]))
    return result
