"""Local replacement for the get-pip.py bootstrap script that ansible-test runs.

Before ansible-test (ansible-core 2.16 and 2.19) installs anything into a
virtual environment it creates, it runs ~/.ansible/test/cache/get_pip_<X_Y_Z>.py
inside that environment. If the file is missing, ansible-test downloads it
from a host outside the package registries, which this project must not
contact. scripts/install.sh copies this file to that name.

ansible-test passes pip install arguments (the pinned pip, and for 2.16 also
setuptools and wheel) plus get-pip.py's own --no-setuptools and --no-wheel
flags. This script installs pip from the interpreter's bundled ensurepip
wheel, without network access, and then runs pip install with the remaining
arguments. pip fetches the pinned versions from PyPI unless they are cached.
"""

import subprocess
import sys

# get-pip.py flags that exclude a package which ensurepip may have installed.
EXCLUDE_FLAGS = {
    '--no-setuptools': 'setuptools',
    '--no-wheel': 'wheel',
}


def run(command):
    """Run a command with this interpreter and exit with its status if it fails."""
    status = subprocess.call([sys.executable] + command)

    if status != 0:
        sys.exit(status)


def main():
    """Bootstrap pip, install the requested packages and drop excluded ones."""
    arguments = sys.argv[1:]
    pip_arguments = [arg for arg in arguments if arg not in EXCLUDE_FLAGS]
    excluded = [EXCLUDE_FLAGS[arg] for arg in arguments if arg in EXCLUDE_FLAGS]

    run(['-m', 'ensurepip', '--default-pip'])
    run(['-m', 'pip', 'install'] + pip_arguments)

    # On Python 3.11, ensurepip also installs setuptools.
    if excluded:
        run(['-m', 'pip', 'uninstall', '--yes', '--quiet'] + excluded)


if __name__ == '__main__':
    main()
