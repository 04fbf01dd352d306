"""``ray job submit`` entry point: generate a data set on the cluster it runs on.

    ray job submit --working-dir . -- python jobs/generate.py \\
        --num-patterns 150000 --out /shared/datasets/cdi150k

Same flags as ``cdiflow generate`` (the same parser and pipeline). Under ``ray job
submit`` RAY_ADDRESS is set, so this connects to that cluster; the output folder must be
visible to every node (shared storage).
"""

from __future__ import annotations

import sys

from cdiflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["generate", *sys.argv[1:]]))
