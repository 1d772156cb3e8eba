#!/usr/bin/env bash
# Build a demo acme2certifier database in DIR for `make demo`.
#
# Runs tests/acme_server/lab.py with the interpreter in $PYTHON (default:
# .venv/bin/python of this repository), which needs acme2certifier 0.46.3
# and certbot installed. The server and the clients run in a loopback-only
# network namespace. The database ends up in DIR/acme_srv/acme_srv.db and
# the JSON summary in DIR/summary.json and on stdout.
#
# Usage: scripts/make-demo-db.sh DIR
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
workdir=$1

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-$repo_root/.venv/bin/python}

if ! command -v "$python" >/dev/null 2>&1; then
    echo "error: python interpreter not found: $python; create .venv with the project's pinned packages or set PYTHON" >&2
    exit 1
fi
if ! "$python" -c 'import acme, acme2certifier' >/dev/null 2>&1; then
    echo "error: $python cannot import acme2certifier and acme; set PYTHON to the project's .venv/bin/python" >&2
    exit 1
fi

# 5 accounts x 8 certificates, plus one certificate of the account that is
# deactivated and 3 from certbot: 44 certificates. They are valid for one
# day, so housekeeping run with a date two or more days ahead finds every
# certificate expired.
exec "$python" "$repo_root/tests/acme_server/lab.py" build \
    --workdir "$workdir" \
    --accounts 5 \
    --certs-per-account 8 \
    --certbot 3 \
    --cert-validity-days 1 \
    --timeout 300
