# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Start the acmeops.housekeeping job with the engine copy in the acmehk folder beside this file.

The role acmeops.housekeeping.acme_hk installs this launcher and runs it as
``python3 -I run_job.py --config FILE``. With -I, Python ignores PYTHONPATH and the user's
site directory and does not add the script's folder to sys.path, so this file adds exactly
that folder.
"""

import importlib
import os
import sys


def main():
    """Run the job with the command-line arguments and exit with its status."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    job = importlib.import_module("acmehk.job")
    sys.exit(job.main(sys.argv[1:]))


if __name__ == "__main__":
    main()
