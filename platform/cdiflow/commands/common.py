"""Flags that several verbs share, declared once: ``--workspace``, ``--address``, ``--model``,
``--verbose``.

Every verb that takes one of these flags adds it with the function here, so it has the
same type, default and help text in every verb, and ``--model`` accepts the same forms
everywhere: argparse hands the verb the reference already normalised by
``cdiflow.pipelines.tracking.model_reference`` (resolving it, in the registry or on
disk, stays with ``tracking.load_model``). Only the standard library and
``cdiflow.errors`` are imported at module level, so ``cdiflow --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cdiflow.errors import ModelNotFound

#: The workspace folder when ``--workspace`` is not given (relative to the current folder).
DEFAULT_WORKSPACE = Path("cdiflow-workspace")

WORKSPACE_HELP = (
    "workspace folder: the embedded MLflow store (WORKSPACE/mlflow.db; not used when "
    "MLFLOW_TRACKING_URI names a server) and what cdiflow keeps there, such as runs/, "
    "sweeps/ and logs/ (default: %(default)s)"
)
ADDRESS_HELP = (
    "Ray cluster: 'auto' (the one `ray start` runs on this machine) or its GCS address host:port"
)
#: What most verbs do without ``--address`` (the quickstart says its own).
ADDRESS_DEFAULT = "RAY_ADDRESS, else a small local Ray started for this run"
MODEL_HELP = (
    "the CNN: a registry alias (champion), a version number (3), models:/NAME@ALIAS, "
    "models:/NAME/VERSION, a weights file (.pt), or a shipped model: pretrained (the "
    "paper's data) or pretrained-realistic (noisy, masked data: for measured scans); "
    "registry models are looked up in MLFLOW_TRACKING_URI or the --workspace store"
)
VERBOSE_HELP = (
    "print Ray's own log lines here, as Ray does (default: only Ray's warnings and errors; "
    "the rest goes to WORKSPACE/logs/ray-TIME.log)"
)


def add_workspace(parser: argparse.ArgumentParser) -> argparse.Action:
    """``--workspace DIR`` (a ``Path``; default ``cdiflow-workspace``)."""
    return parser.add_argument(
        "--workspace", type=Path, default=DEFAULT_WORKSPACE, help=WORKSPACE_HELP
    )


def add_address(
    parser: argparse.ArgumentParser, when_omitted: str = ADDRESS_DEFAULT
) -> argparse.Action:
    """``--address ADDRESS`` (a string; default None).

    ``when_omitted`` says in the help what the verb does without the flag: by default
    ``RAY_ADDRESS``, else a local Ray (the quickstart ignores ``RAY_ADDRESS``).
    """
    return parser.add_argument(
        "--address", default=None, help=f"{ADDRESS_HELP} (default: {when_omitted})"
    )


def add_verbose(parser: argparse.ArgumentParser) -> argparse.Action:
    """``--verbose``: Ray's normal console output (see ``ray_console``)."""
    return parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)


def ray_console(args: argparse.Namespace) -> None:
    """Unless ``--verbose``: Ray's chatter to ``WORKSPACE/logs`` (``cluster.quiet_ray``).

    Call in a verb's ``run`` before Ray starts. The file's path is printed on stderr when
    Ray starts.
    """
    if args.verbose:
        return
    from cdiflow.pipelines import cluster

    cluster.quiet_ray(
        args.workspace,
        say=lambda line: print(f"{line} (--verbose prints them here)", file=sys.stderr),
    )


def end_ray_console() -> None:
    """Undo ``ray_console`` (``cli.main`` calls it when a verb returns)."""
    module = sys.modules.get("cdiflow.pipelines.ray_console")
    if module is not None:
        module.restore()


def add_model(
    parser: argparse.ArgumentParser, required: bool = False, when_omitted: str | None = None
) -> argparse.Action:
    """``--model MODEL``, normalised by ``parse_model`` (default None).

    ``when_omitted`` says in the help what the verb does without the flag (for example
    "champion"); it is ignored when the flag is required.
    """
    text = MODEL_HELP
    if when_omitted and not required:
        text = f"{MODEL_HELP} (default: {when_omitted})"
    return parser.add_argument(
        "--model", type=parse_model, required=required, default=None, help=text
    )


def parse_model(value: str) -> str:
    """The argparse ``type`` of ``--model``: ``tracking.model_reference(value)``.

    ``3`` -> ``models:/cdiflow-cnn/3``, ``champion`` -> ``models:/cdiflow-cnn@champion``,
    ``models:/...`` unchanged, a file path -> its absolute path. A ``models:/`` reference
    that does not parse is an argparse error (exit code 2, the usage line and the forms
    that work).
    """
    from cdiflow.pipelines.tracking import model_reference

    try:
        return model_reference(value)
    except ModelNotFound as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
