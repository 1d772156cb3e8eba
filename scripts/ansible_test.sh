#!/usr/bin/env bash
# Run ansible-test for one ansible-core version in a copy of the collection.
#
# Usage: scripts/ansible_test.sh CORE_VERSION COMMAND [ARGUMENTS...]
#   CORE_VERSION  2.19 (ansible-core from .venv) or 2.16 (from .venv-2.16)
#   COMMAND       sync         copy the collection into the tree and stop
#                 prime        also create the sanity tests' virtual environments
#                 prime-units  also install the units requirements
#                 anything else is an ansible-test command, for example
#                 "sanity --venv --python 3.11"
#
# ansible-test must run from a real directory .../ansible_collections/acmeops/housekeeping.
# Each ansible-core version gets its own tree, because ansible-test keeps its
# delegation virtual environment in the tree's tests/output, and the 2.16 and
# 2.19 environments need different packages.
#
# HOME is set to $ANSIBLE_TEST_HOME (default build/home) so that ansible-test's
# cache and virtual environments (~/.ansible/test) stay inside build/.
# Environment: ANSIBLE_TEST_HOME, ANSIBLE_TEST_PYTHON (default 3.11; the
# Python version that prime and prime-units prepare).
set -euo pipefail

repo_root=$(cd "$(dirname "$0")/.." && pwd)
collection_subdir=ansible_collections/acmeops/housekeeping
ansible_test_home=${ANSIBLE_TEST_HOME:-$repo_root/build/home}
ansible_test_python=${ANSIBLE_TEST_PYTHON:-3.11}

if [ $# -lt 2 ]; then
    echo "usage: $0 CORE_VERSION COMMAND [ARGUMENTS...]" >&2
    exit 2
fi

core_version=$1
command=$2
shift 2

case $core_version in
    2.19)
        venv=$repo_root/.venv
        tree=$repo_root/build/ansible-test/$collection_subdir
        ;;
    2.16)
        venv=$repo_root/.venv-2.16
        tree=$repo_root/build/ansible-test-2.16/$collection_subdir
        ;;
    *)
        echo "error: unsupported ansible-core version '$core_version'; use 2.19 or 2.16" >&2
        exit 2
        ;;
esac

if [ ! -x "$venv/bin/ansible-test" ]; then
    echo "error: $venv/bin/ansible-test not found; run 'make install' first" >&2
    exit 1
fi

# Copy the get-pip stand-in to the cache file name that this ansible-test
# version looks for. Without it, ansible-test downloads get-pip.py from a
# host outside the package registries.
install_get_pip_standin() {
    local pip_version
    pip_version=$("$venv/bin/python" -c '
import sys, types
from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(types.SimpleNamespace(version=sys.argv[1]))["pip"])
' "$ansible_test_python")

    mkdir -p "$ansible_test_home/.ansible/test/cache"
    cp "$repo_root/scripts/get_pip_standin.py" \
        "$ansible_test_home/.ansible/test/cache/get_pip_${pip_version//./_}.py"
}

run_ansible_test() {
    (cd "$tree" && HOME=$ansible_test_home "$venv/bin/ansible-test" "$@")
}

# Install the units requirements into the delegation virtual environment.
# "ansible-test units" installs nothing when it finds no test files, so a
# placeholder test is added to the tree for this step and removed again.
prime_units() {
    local placeholder=tests/unit/plugins/modules/test_units_requirements_placeholder.py

    mkdir -p "$tree/$(dirname "$placeholder")"
    printf 'def test_placeholder():\n    pass\n' > "$tree/$placeholder"
    run_ansible_test units --venv --python "$ansible_test_python" --requirements-mode only "$placeholder"
    rm -f "$tree/$placeholder"
    "$venv/bin/python" "$repo_root/scripts/sync_tree.py" "$repo_root" "$tree"
}

"$venv/bin/python" "$repo_root/scripts/sync_tree.py" "$repo_root" "$tree"
install_get_pip_standin

case $command in
    sync)
        ;;
    prime)
        run_ansible_test sanity --venv --python "$ansible_test_python" --prime-venvs
        ;;
    prime-units)
        prime_units
        ;;
    *)
        run_ansible_test "$command" "$@"
        ;;
esac
