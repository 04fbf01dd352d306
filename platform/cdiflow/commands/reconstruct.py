"""``cdiflow reconstruct``: reconstruct every scan of a beamtime (Ray Data job)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cdiflow.commands.common import (
    add_address,
    add_model,
    add_verbose,
    add_workspace,
    ray_console,
)
from cdiflow.errors import InputError

DESCRIPTION = """\
Reconstruct the scans of a beamtime: read each scan (APS 34-ID-C SPEC + TIFF with dark
and flat-field correction; or a folder of HDF5/NeXus/CXI, TIFF, NPY/NPZ files; or one
such file, 'file.h5:/entry/data'), preprocess it, predict amplitude and phase with the
CNN (an actor pool; GPU when the cluster has one), refine with iterative phasing from
--starts starts per scan (default 4: the CNN phase + support and 3 random phases inside
the CNN support, the paper's 600 ER/HIO iterations with shrink-wrap; the run of least
chi2 is kept), and write per scan:

  OUT/scans/<scan>.h5      amplitude, phase, unwrapped phase, support, chi2 curve,
                           preprocessing parameters, model and config (provenance)
  OUT/previews/<scan>.png  preview image
and for the beamtime OUT/summary.parquet, OUT/summary.csv, OUT/report.html.

Preprocessing: the centre is the pattern's centre of symmetry (sub-pixel); the CNN's
64x64 pattern is binned by the largest factor that keeps it oversampled >= 2x per axis
(measured from the autocorrelation) with its window inside the frame, so a 64x64 frame
is used as it is. Unmeasured, not zero: the file's mask (CXI 'mask', NeXus
'pixel_mask'), --mask, calibration-bad, dead, hot and saturated pixels, the connected
zero-count region at the centre (a beamstop) and rows/columns without counts (detector
gaps). Refinement runs at --refine-size: 64 (default) refines the CNN's pattern;
128/256/512 cut that many pixels by the same rule; native uses the detector pixels,
the largest window the frame holds. Above 64 the CNN's guess is upsampled with its
support; --start autocorrelation starts blind from the autocorrelation support.

Every finished scan gets a verdict: 'ok', or 'suspect: <reason>' when the support
fills the upper bound, the starts disagree, chi2 did not converge or the pattern has
too few photons (thresholds: the config's 'verdict' section); the report lists the
suspect scans in their own section. Every scan gets a figure (--figures all|suspect|none).

A bad scan never stops the job: it gets a 'failed' row with the reason. Re-running
skips the scans finished with the same model version, reconstruction config and input
files (the summary's model_version, config_hash and input_fingerprint columns), and
redoes failed and missing ones and those whose model, config or input changed (its
progress line says which); --force redoes every scan.
"""

EPILOG = """\
examples:
  cdiflow reconstruct ../shared/data/aps-34idc-scan54 --out results/scan54
  cdiflow reconstruct /data/beamtime --scans 54,60-80 --out results/bt --model 3
  cdiflow reconstruct /data/beamtime --out results/bt --model my-weights.pt --address auto
  cdiflow reconstruct frames/ --out results/fcdi --refine-size native --mask mask.npy

Exit codes: 0 the job ran (failed scans are listed in the table), 2 bad input
(unknown model, missing beamtime, bad --scans or --schedule, unusable --out, a Ray
address that does not answer; --out is not created then), 1 other errors.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "reconstruct",
        help="reconstruct every scan of a beamtime (CNN + iterative refinement on Ray)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "beamtime", nargs="+", metavar="BEAMTIME", help="beamtime folder(s) or scan source(s)"
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--scans", help="scan numbers, e.g. 54,60-80 (default: all with data)")
    add_model(parser, when_omitted="champion")
    add_workspace(parser)
    add_address(parser)
    add_verbose(parser)
    _add_refinement_flags(parser)
    parser.add_argument("--seed", type=int, help="seed of random starts (default 0)")
    parser.add_argument(
        "--max-source-mib",
        type=float,
        help="refuse (a failed row, nothing read) a scan whose data is above this many MiB "
        "(default 2048): a worker holds a scan whole, plus a float32 copy",
    )
    _add_detector_flags(parser)
    parser.add_argument("--config", type=Path, help="YAML ReconstructConfig")
    parser.add_argument(
        "--local", action="store_true", help="run in this process without Ray (debugging)"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="redo every scan, also those finished with the same model, config and input",
    )
    parser.set_defaults(run=run)
    return parser


def _add_refinement_flags(parser: argparse.ArgumentParser) -> None:
    """How each scan is refined: schedules, starts, adaptation of the CNN."""
    parser.add_argument(
        "--schedule",
        help="phasing schedule of the random starts, e.g. '5*(100*HIO+20*ER)' (default: the "
        "paper's); ADAM steps are gradient steps on the object",
    )
    parser.add_argument(
        "--guess-schedule",
        help="phasing schedule of the run from the CNN's guess, refined alone (default: "
        "the guess and 4 random-phase copies in its support, '3*(25*HIO+8*ER)' at beta "
        "0.5, then '60*ER' for the one of least chi^2, measured for guessed starts; "
        "'same' uses --schedule)",
    )
    parser.add_argument(
        "--adapt",
        type=int,
        metavar="STEPS",
        nargs="?",
        const=100,
        help="fine-tune a copy of the CNN on each scan's pattern for up to STEPS steps "
        "(default 100) with the physics term alone before it predicts; the summary gains "
        "adapted_cnn_chi2 beside cnn_chi2",
    )
    parser.add_argument(
        "--adapt-scope",
        choices=("scan", "batch"),
        help="adapt one CNN copy per scan (default) or one per CNN batch of scans",
    )
    parser.add_argument(
        "--start",
        choices=("cnn", "random-cnn-support", "random-rectangle", "autocorrelation"),
        help="refinement start (default cnn: CNN phase + support; autocorrelation: blind, "
        "random phase inside the pattern's autocorrelation support halved)",
    )
    parser.add_argument(
        "--starts",
        type=int,
        help="refinement runs per scan (default 4): the --start and random phases inside "
        "the CNN support; the best by chi2 is kept, their agreement goes into the verdict",
    )
    parser.add_argument(
        "--figures",
        choices=("all", "suspect", "none"),
        help="which scans get their figure previews/<scan>.png (pattern and mask, amplitude "
        "and phase with the support, every start's chi2; default all): about 0.5 s of CPU "
        "a scan, several times a 64 x 64 refinement",
    )


def _add_detector_flags(parser: argparse.ArgumentParser) -> None:
    """--refine-size and --mask: the resolution of refinement and the bad pixels."""
    parser.add_argument(
        "--refine-size",
        choices=("64", "128", "256", "512", "native"),
        help="pixels per axis of the refined pattern (default 64: the CNN's pattern; "
        "native: bin 1, the largest window around the centre); the upper bound scales "
        "with it, scans of one size are refined together",
    )
    parser.add_argument(
        "--mask",
        metavar="FILE",
        help="bad-pixel mask for every scan, NPY, TIFF or HDF5 (FILE.h5:/path, or the "
        "file's CXI 'mask' / NeXus 'pixel_mask'); nonzero = bad (CXI convention), of "
        "the frames' shape; added to the scan file's own mask",
    )


def _with_guess_schedule(config, schedule: str | None):
    """``--guess-schedule``: a schedule for the CNN's run, the guess refined alone (its
    beta and shrink-wrap stay as configured, the guessed-start defaults unless the YAML
    says otherwise; the default's candidates and ER tail belong to its own schedule), or
    ``same`` for the random starts' settings."""
    from cdiflow.phasing.settings import SEEDED_SETTINGS

    if schedule is None:
        return config
    if schedule == "same":
        return config.replace(guess=None)
    guess = config.guess or SEEDED_SETTINGS
    if guess == SEEDED_SETTINGS:
        guess = guess.replace(candidates=1, tail="")
    return config.replace(guess=guess.replace(schedule=schedule))


def load_config(args: argparse.Namespace):
    """The validated ``ReconstructConfig``: YAML file (optional), then flags on top."""
    from cdiflow.beamtime.config import ReconstructConfig

    overrides = {
        "schedule": args.schedule,
        "adapt.steps": getattr(args, "adapt", None),
        "adapt_scope": getattr(args, "adapt_scope", None),
        "start": args.start,
        "starts": args.starts,
        "seed": args.seed,
        "figures": getattr(args, "figures", None),
        "max_source_mib": args.max_source_mib,
        "preprocess.refine_size": getattr(args, "refine_size", None),
        "preprocess.mask_file": _mask_source(getattr(args, "mask", None)),
    }
    config = ReconstructConfig.from_yaml(args.config, overrides)
    return _with_guess_schedule(config, getattr(args, "guess_schedule", None))


def _mask_source(mask: str | None) -> str | None:
    """``--mask`` as an absolute source (workers may run elsewhere), checked readable.

    Raises ``InputError`` (one line, exit 2) for a missing or unreadable mask file.
    """
    if not mask:
        return None
    from cdiflow.formats.generic import split_source
    from cdiflow.formats.masks import read_mask_file
    from cdiflow.formats.scan import ScanError

    path, key = split_source(mask)
    source = str(path.expanduser().resolve()) + (f":{key}" if key else "")
    try:
        read_mask_file(source)
    except ScanError as exc:
        raise InputError(str(exc)) from None
    return source


def check_sources(sources: list[str]) -> None:
    """Raise ``InputError`` naming every source whose folder or file does not exist.

    ``file.h5:/entry/data`` is checked for ``file.h5``. A source that exists but holds no
    scan still runs (it becomes a failed row that says why).
    """
    from cdiflow.formats.generic import split_source

    missing = [str(s) for s in sources if not split_source(s)[0].exists()]
    if missing:
        raise InputError(f"beamtime source(s) not found: {', '.join(missing)}")


def run(args: argparse.Namespace) -> int:
    from cdiflow.formats.aps34idc import parse_scan_selection
    from cdiflow.pipelines.reconstruct import reconstruct_beamtime

    config = load_config(args)  # ConfigError / ScheduleSyntaxError: exit 2, nothing started
    selection = None
    if args.scans:
        try:
            selection = parse_scan_selection(args.scans)
        except ValueError as exc:
            raise InputError(str(exc)) from None
    check_sources(args.beamtime)
    ray_console(args)  # nothing is written unless Ray starts (not with --local)
    outcome = reconstruct_beamtime(
        args.beamtime,
        args.out,
        model=args.model,
        workspace=args.workspace,
        config=config,
        selection=selection,
        address=args.address,
        runner="local" if args.local else "ray",
        force=args.force,
    )
    print(
        f"{len(outcome.ok)} ok, {len(outcome.failed)} failed, {outcome.skipped} skipped "
        f"(finished earlier) in {outcome.seconds:.1f} s"
    )
    if outcome.suspect:
        print(f"{len(outcome.suspect)} of the ok scans are suspect (see the report):")
    for row in outcome.suspect:
        print(f"  {row['scan']}: {row['verdict']}")
    for row in outcome.failed:
        print(f"  failed: {row['scan']}: {row['reason']}")
    print(f"report: {outcome.report}")
    print(f"table:  {outcome.summary_csv}")
    return 0
