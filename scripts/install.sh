#!/usr/bin/env bash
# Prepare everything that the test targets need, so that they run without
# network access afterwards:
#   - .venv (tests/requirements.txt) and .venv-2.16 (tests/requirements-oldest.txt)
#   - build/collections/ansible_collections/acmeops/housekeeping, a symlink to
#     the repository root, for ANSIBLE_COLLECTIONS_PATH
#   - ansible-test's virtual environments for sanity (2.19 and 2.16) and units (2.19)
# This is the only step that contacts a package registry (PyPI through pip).
# A second run reuses the virtual environments and takes seconds.
#
# Environment: PYTHON (default python3; must be Python 3.11), QUIET (non-empty:
# write the output to build/install.log and print it only on failure).
set -euo pipefail

cd "$(dirname "$0")/.."
repo_root=$PWD
python=${PYTHON:-python3}
log=build/install.log

if [ -n "${QUIET:-}" ]; then
    mkdir -p build
    if ! QUIET='' "$0" > "$log" 2>&1; then
        echo "error: make install failed; its output ($log) follows" >&2
        cat "$log" >&2
        exit 1
    fi
    echo "install: done (output in $log)"
    exit 0
fi

python_version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$python_version" != 3.11 ]; then
    echo "error: $python is Python $python_version; the pinned requirements need Python 3.11 (set PYTHON=...)" >&2
    exit 1
fi

# Create the virtual environment DIRECTORY unless it exists, then install
# REQUIREMENTS into it. pip contacts PyPI only for packages that are missing.
create_venv() {
    local directory=$1 requirements=$2

    if [ ! -x "$directory/bin/python" ]; then
        echo "install: creating $directory"
        "$python" -m venv "$directory"
    fi

    echo "install: installing $requirements into $directory"
    "$directory/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    "$directory/bin/python" -m pip check
}

create_venv .venv tests/requirements.txt
create_venv .venv-2.16 tests/requirements-oldest.txt

echo "install: linking build/collections/ansible_collections/acmeops/housekeeping to $repo_root"
mkdir -p build/collections/ansible_collections/acmeops
ln -sfn ../../../.. build/collections/ansible_collections/acmeops/housekeeping

# ansible-test fetches the packages of its own virtual environments from PyPI
# the first time; later runs find them installed.
echo "install: preparing ansible-test virtual environments (ansible-core 2.19)"
scripts/ansible_test.sh 2.19 prime
scripts/ansible_test.sh 2.19 prime-units
echo "install: preparing ansible-test virtual environments (ansible-core 2.16)"
scripts/ansible_test.sh 2.16 prime

echo "install: done"
