"""``ray job submit -- python jobs/tune.py --data DIR [...]``: a sweep on the running cluster.

Thin entry point: the same flags as ``cdiflow tune``. Inside ``ray job submit`` the
driver has RAY_ADDRESS set and joins that cluster; ``--storage-path`` (the sweep folder)
and ``--data`` must be on storage every node reaches, and MLFLOW_TRACKING_URI must name
a server (set it in the runtime_env). Errors become one line and exit code 2 (bad
input) or 1, like the CLI; an interrupted sweep exits 130 and continues when re-run
with the same --name.
"""

from __future__ import annotations

import sys

from cdiflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
