"""``ray job submit -- python jobs/train.py --data DIR [...]``: train on the running cluster.

Thin entry point: the same flags as ``cdiflow train``. Inside ``ray job submit`` the
driver has RAY_ADDRESS set and joins that cluster; elsewhere it starts a local Ray.
Errors become one line and exit code 2 (bad input) or 1, like the CLI.
"""

from __future__ import annotations

import sys

from cdiflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
