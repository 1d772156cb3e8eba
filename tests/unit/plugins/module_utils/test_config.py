# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Finding acme_srv.cfg and the database in the installation layouts acme2certifier uses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ansible_collections.acmeops.housekeeping.plugins.module_utils._acmehk.config import (
    Installation,
    locate,
    read_config,
)
from ansible_collections.acmeops.housekeeping.plugins.module_utils._acmehk.errors import ConfigError


def _write(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _touch_db(path: Path) -> Path:
    # locate() only checks that the file exists, because the database layer opens it.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


# Layouts ----------------------------------------------------------------------------------


def test_locate_deb_rpm_layout(tmp_path):
    config = _write(tmp_path / "acme_srv" / "acme_srv.cfg", "[Nonce]\nvalidity: 600\n")
    database = _touch_db(tmp_path / "acme_srv" / "acme_srv.db")

    found = locate(acme_srv_dir=str(tmp_path))

    assert found.config_path == str(config)
    assert found.database == str(database)
    assert found.database_source == "default location"
    assert found.integer_option("Nonce", "validity", 86400) == 600


def test_locate_acme_srv_folder(tmp_path):
    folder = tmp_path / "acme_srv"
    config = _write(folder / "acme_srv.cfg", "[DEFAULT]\ndebug: False\n")
    database = _touch_db(folder / "acme_srv.db")

    found = locate(acme_srv_dir=str(folder))

    assert found.config_path == str(config)
    assert found.database == str(database)


def test_locate_docker_volume(tmp_path):
    config = _write(tmp_path / "volume" / "acme_srv.cfg", "[DEFAULT]\ndebug: False\n")
    database = _touch_db(tmp_path / "volume" / "acme_srv.db")

    found = locate(acme_srv_dir=str(tmp_path))

    assert found.config_path == str(config)
    assert found.database == str(database)


def test_locate_docker_volume_dbfile(tmp_path):
    config = _write(
        tmp_path / "volume" / "acme_srv.cfg",
        f"[DBhandler]\ndbfile: {tmp_path / 'volume' / 'a2c.db'}\n",
    )

    found = locate(acme_srv_dir=str(tmp_path))

    assert found.config_path == str(config)
    assert found.database == str(tmp_path / "volume" / "a2c.db")


def test_locate_pip_root(tmp_path):
    config = _write(tmp_path / "acme_srv.cfg", "[DEFAULT]\ndebug: False\n")
    database = _touch_db(tmp_path / "acme_srv.db")

    found = locate(acme_srv_dir=str(tmp_path))

    assert found.config_path == str(config)
    assert found.database == str(database)


def test_locate_pip_root_wins(tmp_path):
    # acme2certifier 0.46.3 prefers acme_srv.cfg and acme_srv.db in the deploy root over the
    # copies below acme_srv/.
    root_config = _write(tmp_path / "acme_srv.cfg", "[Nonce]\nvalidity: 1\n")
    _write(tmp_path / "acme_srv" / "acme_srv.cfg", "[Nonce]\nvalidity: 2\n")
    root_db = _touch_db(tmp_path / "acme_srv.db")
    _touch_db(tmp_path / "acme_srv" / "acme_srv.db")

    found = locate(acme_srv_dir=str(tmp_path))

    assert found.config_path == str(root_config)
    assert found.database == str(root_db)


def test_locate_pre_017_layout(tmp_path):
    config = _write(tmp_path / "acme" / "acme_srv.cfg", "[DEFAULT]\ndebug: False\n")
    database = _touch_db(tmp_path / "acme" / "acme_srv.db")

    found = locate(acme_srv_dir=str(tmp_path))

    assert found.config_path == str(config)
    assert found.database == str(database)


def test_locate_database_without_config(tmp_path):
    database = _touch_db(tmp_path / "acme_srv" / "acme_srv.db")

    found = locate(acme_srv_dir=str(tmp_path))

    assert found.config_path is None
    assert found.database == str(database)
    assert found.integer_option("Nonce", "validity", 86400) == 86400


# [DBhandler] dbfile -----------------------------------------------------------------------


def test_locate_dbfile_absolute(tmp_path):
    elsewhere = tmp_path / "var" / "lib" / "acme" / "db.sqlite3"
    config = _write(tmp_path / "root" / "acme_srv" / "acme_srv.cfg", f"[DBhandler]\ndbfile: {elsewhere}\n")
    # A database in the default place must not win over the configured one.
    _touch_db(tmp_path / "root" / "acme_srv" / "acme_srv.db")

    found = locate(acme_srv_dir=str(tmp_path / "root"))

    assert found.database == str(elsewhere)
    assert str(config) in found.database_source
    assert "dbfile" in found.database_source


def test_locate_dbfile_relative_to_dir(tmp_path):
    _write(tmp_path / "acme_srv" / "acme_srv.cfg", "[DBhandler]\ndbfile = volume/a2c.db\n")

    found = locate(acme_srv_dir=str(tmp_path))

    assert found.database == os.path.join(str(tmp_path), "volume", "a2c.db")


@pytest.mark.parametrize("given", ["acme_srv_dir", "config"])
def test_locate_dbfile_relative_from_acme_srv(tmp_path, given):
    config = _write(tmp_path / "acme_srv" / "acme_srv.cfg", "[DBhandler]\ndbfile: volume/a2c.db\n")
    if given == "acme_srv_dir":
        found = locate(acme_srv_dir=str(tmp_path / "acme_srv"))
    else:
        found = locate(config=str(config))
    assert found.database == os.path.join(str(tmp_path), "volume", "a2c.db")


def test_locate_dbfile_relative_to_config(tmp_path):
    config = _write(tmp_path / "etc" / "acme_srv.cfg", "[DBhandler]\ndbfile: data/a2c.db\n")

    found = locate(config=str(config))

    assert found.database == os.path.join(str(tmp_path / "etc"), "data", "a2c.db")


def test_locate_dbfile_whitespace(tmp_path):
    target = tmp_path / "a2c.db"
    config = _write(tmp_path / "acme_srv.cfg", f"[DBhandler]\ndbfile:    {target}   \n")

    found = locate(config=str(config))

    assert found.database == str(target)


def test_locate_dbfile_empty_uses_default(tmp_path):
    _write(tmp_path / "acme_srv" / "acme_srv.cfg", "[DBhandler]\ndbfile:\n")
    database = _touch_db(tmp_path / "acme_srv" / "acme_srv.db")

    found = locate(acme_srv_dir=str(tmp_path))

    assert found.database == str(database)


def test_locate_section_case_sensitive(tmp_path):
    # acme2certifier reads [DBhandler] only, because section names are case-sensitive.
    _write(tmp_path / "acme_srv.cfg", f"[dbhandler]\ndbfile: {tmp_path / 'ignored.db'}\n")
    database = _touch_db(tmp_path / "acme_srv.db")

    found = locate(acme_srv_dir=str(tmp_path))

    assert found.database == str(database)


def test_locate_database_option_wins(tmp_path):
    config = _write(tmp_path / "acme_srv.cfg", f"[DBhandler]\ndbfile: {tmp_path / 'configured.db'}\n")
    chosen = tmp_path / "chosen.db"

    found = locate(database=str(chosen), acme_srv_dir=str(tmp_path))

    assert found.database == str(chosen)
    assert found.database_source == "option"
    assert found.config_path == str(config)


def test_locate_database_option_keeps_config(tmp_path):
    config = _write(tmp_path / "cfg" / "acme_srv.cfg", "[Nonce]\nvalidity: 42\n")

    found = locate(database=str(tmp_path / "x.db"), config=str(config))

    assert found.integer_option("Nonce", "validity", 86400) == 42


def test_locate_explicit_config(tmp_path):
    _write(tmp_path / "root" / "acme_srv" / "acme_srv.cfg", f"[DBhandler]\ndbfile: {tmp_path / 'from_dir.db'}\n")
    explicit = _write(tmp_path / "other" / "custom.cfg", f"[DBhandler]\ndbfile: {tmp_path / 'from_explicit.db'}\n")

    found = locate(acme_srv_dir=str(tmp_path / "root"), config=str(explicit))

    assert found.config_path == str(explicit)
    assert found.database == str(tmp_path / "from_explicit.db")


def test_locate_explicit_config_default_db(tmp_path):
    config = _write(tmp_path / "acme_srv.cfg", "[DEFAULT]\ndebug: False\n")
    database = _touch_db(tmp_path / "acme_srv.db")

    found = locate(config=str(config))

    assert found.database == str(database)


def test_locate_config_no_interpolation(tmp_path):
    # acme2certifier reads acme_srv.cfg without interpolation, so "%" is a plain character.
    target = tmp_path / "db%(x)s.db"
    config = _write(tmp_path / "acme_srv.cfg", f"[DBhandler]\ndbfile: {target}\n")

    found = locate(config=str(config))

    assert found.database == str(target)


# Errors -----------------------------------------------------------------------------------


def test_locate_nothing_given():
    with pytest.raises(ConfigError) as caught:
        locate()
    assert "database" in caught.value.msg
    assert "acme_srv_dir" in caught.value.msg


def test_locate_missing_dir(tmp_path):
    missing = tmp_path / "no-such-install"
    with pytest.raises(ConfigError) as caught:
        locate(acme_srv_dir=str(missing))
    assert str(missing) in caught.value.msg
    assert "installation directory" in caught.value.msg


def test_locate_dir_is_file(tmp_path):
    not_a_dir = _write(tmp_path / "acme_srv.cfg", "[DEFAULT]\n")
    with pytest.raises(ConfigError) as caught:
        locate(acme_srv_dir=str(not_a_dir))
    assert str(not_a_dir) in caught.value.msg


def test_locate_missing_config(tmp_path):
    missing = tmp_path / "etc" / "acme_srv.cfg"
    with pytest.raises(ConfigError) as caught:
        locate(config=str(missing))
    assert str(missing) in caught.value.msg
    assert "config option" in caught.value.msg


def test_locate_invalid_ini(tmp_path):
    broken = _write(tmp_path / "acme_srv.cfg", "dbfile = /tmp/x.db\nno section header\n")
    with pytest.raises(ConfigError) as caught:
        locate(acme_srv_dir=str(tmp_path))
    assert str(broken) in caught.value.msg
    assert "not a valid INI file" in caught.value.msg
    assert "Fix the file" in caught.value.msg


def test_locate_duplicate_section(tmp_path):
    broken = _write(tmp_path / "acme_srv.cfg", "[Nonce]\nvalidity: 1\n[Nonce]\nvalidity: 2\n")
    with pytest.raises(ConfigError) as caught:
        locate(config=str(broken))
    assert str(broken) in caught.value.msg


def test_locate_config_not_utf8(tmp_path):
    broken = tmp_path / "acme_srv.cfg"
    broken.write_bytes(b"[DBhandler]\ndbfile: /tmp/\xff\xfe.db\n")
    with pytest.raises(ConfigError) as caught:
        locate(config=str(broken))
    assert str(broken) in caught.value.msg


def test_locate_missing_database(tmp_path):
    config = _write(tmp_path / "acme_srv" / "acme_srv.cfg", "[DEFAULT]\ndebug: False\n")
    with pytest.raises(ConfigError) as caught:
        locate(acme_srv_dir=str(tmp_path))
    message = caught.value.msg
    assert str(config) in message
    assert os.path.join(str(tmp_path), "acme_srv", "acme_srv.db") in message
    assert "database option" in message
    assert os.path.join(str(tmp_path), "acme_srv", "acme_srv.db") in caught.value.details["searched"]


def test_locate_empty_dir(tmp_path):
    with pytest.raises(ConfigError) as caught:
        locate(acme_srv_dir=str(tmp_path))
    assert os.path.join(str(tmp_path), "acme_srv.db") in caught.value.msg
    assert "database option" in caught.value.msg


def test_read_config_unreadable(tmp_path):
    directory = tmp_path / "acme_srv.cfg"
    directory.mkdir()
    with pytest.raises(ConfigError) as caught:
        read_config(str(directory))
    assert str(directory) in caught.value.msg


# Installation.integer_option --------------------------------------------------------------


def _installation(tmp_path: Path, text: str) -> Installation:
    config = _write(tmp_path / "acme_srv.cfg", text)
    return locate(database=str(tmp_path / "x.db"), config=str(config))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[Nonce]\nvalidity: 3600\n", 3600),
        ("[Nonce]\nvalidity =  120  \n", 120),
        ("[Nonce]\nvalidity: 0\n", 0),
        ("[Nonce]\nvalidity: -5\n", -5),
        ("[Nonce]\nvalidity:\n", 86400),
        ("[Nonce]\nnonce_check_disable: True\n", 86400),
        ("[Order]\nvalidity: 7\n", 86400),
        ("[nonce]\nvalidity: 7\n", 86400),
        ("[Nonce]\nValidity: 7\n", 86400),
    ],
)
def test_integer_option_values(tmp_path, text, expected):
    assert _installation(tmp_path, text).integer_option("Nonce", "validity", 86400) == expected


@pytest.mark.parametrize("raw", ["abc", "1.5", "86400s", "1e3"])
def test_integer_option_not_integer(tmp_path, raw):
    installation = _installation(tmp_path, f"[Nonce]\nvalidity: {raw}\n")
    with pytest.raises(ConfigError) as caught:
        installation.integer_option("Nonce", "validity", 86400)
    message = caught.value.msg
    assert "[Nonce] validity" in message
    assert repr(raw) in message
    assert installation.config_path in message
    assert "module option" in message


def test_integer_option_no_config():
    installation = Installation(database="/nonexistent.db")
    assert installation.integer_option("Nonce", "validity", 86400) == 86400
