# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Argument spec shared by every module and the one place where engine errors become fail_json."""

from __future__ import annotations

from typing import Any, Callable, Dict

from ansible.module_utils.basic import missing_required_lib

from .batching import DEFAULT_BATCH_PAUSE, DEFAULT_BATCH_TIME
from .db_server import MissingDriver
from .engine import Settings
from .errors import HousekeepingError


def common_argument_spec() -> Dict[str, Any]:
    """Return the options documented in the acmeops.housekeeping.database doc fragment."""
    return dict(
        database=dict(type="path"),
        acme_srv_dir=dict(type="path"),
        config=dict(type="path"),
        now=dict(type="raw"),
        grace_period=dict(type="raw", default=0),
        busy_timeout=dict(type="float", default=10.0),
        batch_size=dict(type="int", default=500),
        batch_time=dict(type="float", default=DEFAULT_BATCH_TIME),
        batch_pause=dict(type="float", default=DEFAULT_BATCH_PAUSE),
        db_handler=dict(type="str", default="auto", choices=["auto", "wsgi", "django"]),
        db_engine=dict(type="str", choices=["sqlite", "postgresql", "mysql"]),
        db_host=dict(type="str", aliases=["login_host"]),
        db_port=dict(type="int", aliases=["login_port"]),
        db_name=dict(type="str", aliases=["login_db"]),
        db_user=dict(type="str", aliases=["login_user"]),
        db_password=dict(type="str", no_log=True, aliases=["login_password"]),
        connect_timeout=dict(type="float", default=30.0),
        ssl_mode=dict(type="str", choices=["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]),
        ca_cert=dict(type="path", aliases=["ssl_rootcert"]),
        client_cert=dict(type="path", aliases=["ssl_cert"]),
        client_key=dict(type="path", aliases=["ssl_key"], no_log=False),
        django_settings=dict(type="path"),
    )


def settings_from(module: Any) -> Settings:
    """Build validated engine settings from a module's parameters."""
    return Settings.from_params(module.params)


def run(module: Any, action: Callable[[], Dict[str, Any]]) -> None:
    """Run one engine action and exit the module with its result or a single clear failure."""
    try:
        result = action()
    except MissingDriver as exc:
        module.fail_json(msg=missing_required_lib(exc.library), exception=exc.msg)
        return
    except HousekeepingError as exc:
        module.fail_json(msg=exc.msg, **_safe_details(exc.details))
        return

    for warning in result.pop("warnings", []) or []:
        module.warn(warning)
    # Not "skipped": Ansible shows a result with a non-empty "skipped" key as a skipped task.
    skipped = result.get("skipped_rows") or []
    if skipped:
        total = result.get("skipped_rows_count", len(skipped))
        module.warn(
            f"{max(total, len(skipped))} row(s) could not be processed and were left unchanged; "
            "see the skipped_rows return value for each row and the reason."
        )
    diff = result.pop("diff", None)
    if diff is not None and module._diff:
        result["diff"] = diff
    module.exit_json(**result)


def _safe_details(details: Dict[str, Any]) -> Dict[str, Any]:
    reserved = {"msg", "failed", "changed", "invocation"}
    return {key: value for key, value in details.items() if key not in reserved}
