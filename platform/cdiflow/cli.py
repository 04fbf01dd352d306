"""The ``cdiflow`` command.

Each verb lives in its own module under ``cdiflow.commands`` and exposes
``add_parser(subparsers)`` and ``run(args) -> int``. Modules are imported only when the
CLI runs, so importing ``cdiflow`` stays free. Library errors (``cdiflow.errors``) are
turned here, and only here, into one-line messages and exit codes: 2 for bad input,
1 for anything else that cdiflow raised on purpose.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from cdiflow import __version__
from cdiflow.commands.common import end_ray_console
from cdiflow.errors import CdiflowError, InputError

# verb -> module under cdiflow.commands (kept in the order `--help` shows them)
VERBS: dict[str, str] = {
    "generate": "generate",
    "train": "train",
    "evaluate": "evaluate",
    "tune": "tune",
    "nns": "nns",
    "compare-init": "compare_init",
    "reconstruct": "reconstruct",
    "quickstart": "quickstart",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cdiflow",
        description=(
            "Machine-learning phase retrieval for coherent X-ray diffraction imaging: "
            "generate synthetic patterns, train the CNN, refine with iterative phasing, "
            "reconstruct whole beamtimes. Every verb has its own --help."
        ),
    )
    parser.add_argument("--version", action="version", version=f"cdiflow {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for module_name in VERBS.values():
        try:
            module = importlib.import_module(f"cdiflow.commands.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"cdiflow.commands.{module_name}":
                raise
            continue  # verb not built yet
        module.add_parser(sub)
    return parser


def _check_environment() -> None:
    """Settings that the library reads from the environment only deep inside a job, read
    here first so that a bad value stops the verb before any work."""
    from cdiflow.phasing import cpu_fft

    cpu_fft.backend_setting()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _check_environment()
        return int(args.run(args) or 0)
    except InputError as exc:
        print(f"cdiflow {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except CdiflowError as exc:
        print(f"cdiflow {args.verb}: failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"cdiflow {args.verb}: interrupted; re-run the same command to resume", file=sys.stderr
        )
        return 130
    finally:
        end_ray_console()  # a verb run in this process leaves Ray's logging as it was


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
