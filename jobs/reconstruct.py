"""``ray job submit -- python jobs/reconstruct.py BEAMTIME --out DIR [...]``.

Thin entry point: the same flags as ``cdiflow reconstruct``. Inside ``ray job submit`` the
driver has RAY_ADDRESS set and joins that cluster; elsewhere it starts a local Ray. The
output folder must be on storage that the workers see. Errors become one line and exit
code 2 (bad input) or 1, like the CLI.
"""

from __future__ import annotations

import sys

from cdiflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["reconstruct", *sys.argv[1:]]))
