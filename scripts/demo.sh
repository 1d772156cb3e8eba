#!/usr/bin/env bash
# The main job on real input: build a database with a real acme2certifier server and real
# ACME clients, then run playbooks/housekeeping.yml on it in check mode, for real, and again.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${VENV:-$repo_root/.venv}
demo_dir=${DEMO_DIR:-$repo_root/build/demo}
export ANSIBLE_COLLECTIONS_PATH=$repo_root/build/collections
export ANSIBLE_PYTHON_INTERPRETER=$venv/bin/python
export ANSIBLE_NOCOLOR=${ANSIBLE_NOCOLOR:-0}
export ANSIBLE_LOCALHOST_WARNING=0
export ANSIBLE_INVENTORY_UNPARSED_WARNING=0

rm -rf "$demo_dir"
mkdir -p "$demo_dir"

echo "== Building a database with acme2certifier 0.46.3 and real ACME clients (loopback only)"
PYTHON=$venv/bin/python "$repo_root/scripts/make-demo-db.sh" "$demo_dir/server" >"$demo_dir/server-summary.json"
database=$demo_dir/server/acme_srv/acme_srv.db
"$venv/bin/python" - "$demo_dir/server-summary.json" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))
print("   rows:", json.dumps(summary.get("row_counts", summary.get("tables", {}))))
PY

# Certificates are valid for one day and orders, authorizations and nonces for one day too,
# so three days from now every operation has work to do.
now=$(date -u -d '+3 days' +%Y-%m-%dT%H:%M:%SZ)
report_dir=$demo_dir/reports
mkdir -p "$report_dir"
chmod 0700 "$report_dir"

run_playbook() {
    "$venv/bin/ansible-playbook" -i localhost, -c local "$repo_root/playbooks/housekeeping.yml" \
        -e acme_hk_hosts=localhost -e "acme_hk_database=$database" -e "acme_hk_now=$now" \
        -e "acme_hk_report_dir=$report_dir" "$@"
}

echo "== 1/3 Check mode with diff: what would change (reference time $now)"
run_playbook --check --diff
echo "== 2/3 Real run"
run_playbook
echo "== 3/3 Second run with the same reference time: nothing changes"
run_playbook | tee "$demo_dir/third-run.log"
if ! grep -Eq 'changed=0 ' "$demo_dir/third-run.log"; then
    echo "error: the second run changed something; see $demo_dir/third-run.log" >&2
    exit 1
fi

echo
echo "Database: $database"
echo "Reports:"
ls -l "$report_dir"
