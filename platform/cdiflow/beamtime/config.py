"""``ReconstructConfig``: how the scans of a beamtime are reconstructed."""

from __future__ import annotations

import dataclasses
import hashlib
import json

from cdiflow import OBJECT_SIZE, PATTERN_SIZE
from cdiflow.beamtime.preprocess import PreprocessConfig
from cdiflow.beamtime.verdict import VerdictConfig
from cdiflow.config import Config, require
from cdiflow.formats.scan import MIB
from cdiflow.models.adapt import AdaptConfig
from cdiflow.phasing.schedule import parse
from cdiflow.phasing.settings import GUESS_KINDS, SEEDED_SETTINGS, RefineSettings
from cdiflow.phasing.shrinkwrap import ShrinkWrap

STARTS = ("cnn", "random-cnn-support", "random-rectangle", "autocorrelation")
ADAPT_SCOPES = ("scan", "batch")
# Fields of ReconstructConfig that do not change a scan's answer: not in config_hash
# (the source size limit only refuses scans, and a failed scan is always redone).
NOT_IN_CONFIG_HASH = ("cnn_batch", "refine_batch", "max_source_mib", "refine_pixels", "figures")
FIGURES = ("all", "suspect", "none")


@dataclasses.dataclass(frozen=True)
class ReconstructConfig(Config):
    """How scans are reconstructed (logged whole into every result file).

    schedule : phasing schedule (default: the paper's 600 ER/HIO iterations).
    start : ``cnn`` (CNN phase + support, the default), ``random-cnn-support`` (random
        phase inside the CNN support) or ``random-rectangle`` (random phase, the 32 x 32
        box): the paper's starts (i)-(iii); the first of the ``starts`` runs.
    starts : runs per scan (``--starts``): the ``start`` above and ``starts - 1`` random
        phases inside the CNN support, all refined in one batched call; the run of
        least chi^2 is the answer, the best few give the consensus of the verdict
        (``cdiflow.beamtime.verdict``). 1: one run, no consensus.
    seed : base seed of the random starts: scan ``key`` draws every random start from
        one ``torch.Generator`` seeded with ``(seed, hash(key))``.
    support_threshold : CNN amplitude binarisation threshold (fraction of its maximum).
    autocorrelation_threshold : the blind start's autocorrelation support threshold
        (fraction of its maximum; ``scan_refine.autocorrelation_support``); 0.05 keeps
        the blob that a beamstop leaves out of it (``PreprocessConfig``), and a support
        a little small is grown by shrink-wrap.
    beta : HIO feedback.
    guess : how the run from the CNN's guess (``start: cnn``) is refined: by default the
        gentle schedule measured for guessed starts (``cdiflow.phasing.settings``), so
        the first 100 HIO iterations at beta 0.9 do not scramble the guess; null: like
        the random starts (``schedule``, ``beta``, ``shrinkwrap``).
    adapt : fine-tune a copy of the CNN on the measured patterns before it predicts
        (``cdiflow.models.adapt``, the physics term only); ``steps: 0`` (default) is off.
    adapt_scope : ``scan`` (one copy per scan) or ``batch`` (one copy per CNN batch of
        up to ``cnn_batch`` scans: once per beamtime when they all fit in one).
    cnn_batch, refine_batch : scans per CNN / refinement batch; a batch is refined per
        pattern size (``preprocess.refine_size``), in calls of at most ``refine_pixels``
        pattern pixels (whole scans, at least one): 2^21 is 32 runs at 256 x 256 or 8
        at 512 x 512, about 16 MiB per complex array of the engine, so the memory of a
        worker stays bounded whatever the size.
    upper_bound : side (pixels of a 64 x 64 pattern; scaled by R / 64 at refinement
        size R) of the square upper-bound support of shrink-wrap; 0 (default) sizes it
        per scan from the oversampling estimate of the refinement pattern: 1.5 x the
        larger estimated object extent, rounded up to even, within [R / 2, 7 R / 8]
        ([32, 56] at 64). The 32-pixel object box clips real objects that are wider than the
        training geometry (scan 54 spans about 28 x 36 pixels): with it, refinement
        from any start stalls near chi^2 2.4e-3 there, like cohere-core on that crop.
    max_source_mib : a scan whose data (as stored: HDF5 dataset, NPY array, TIFF pages,
        34-ID-C frames) is larger gets a failed row before it is read; a worker holds
        it whole plus a float32 copy (``--max-source-mib``).
    verdict : thresholds of the ``ok`` / ``suspect: ...`` verdict (``VerdictConfig``).
    figures : which scans get their figure (``previews/<key>.png``): ``all``, only
        ``suspect`` ones, or ``none``. A figure costs about 0.5 s of CPU a scan, several
        times the refinement of a 64 x 64 scan, so a large beamtime may want fewer.
    """

    schedule: str = "5*(100*HIO+20*ER)"
    start: str = "cnn"
    starts: int = 4
    seed: int = 0
    support_threshold: float = 0.1
    autocorrelation_threshold: float = 0.05
    beta: float = 0.9
    guess: RefineSettings | None = SEEDED_SETTINGS
    adapt: AdaptConfig = AdaptConfig(steps=0)
    adapt_scope: str = "scan"
    cnn_batch: int = 32
    refine_batch: int = 8
    refine_pixels: int = 2**21
    upper_bound: int = 0
    max_source_mib: float = 2048.0
    preprocess: PreprocessConfig = PreprocessConfig()
    shrinkwrap: ShrinkWrap = ShrinkWrap()
    verdict: VerdictConfig = VerdictConfig()
    figures: str = "all"

    def validate(self) -> None:
        parse(self.schedule)  # ScheduleSyntaxError (an InputError) points at the position
        require(self.start in STARTS, f"start must be one of {STARTS}, got {self.start!r}")
        require(1 <= self.starts <= 64, f"starts must be in [1, 64], got {self.starts}")
        require(self.seed >= 0, "seed must be >= 0")
        require(0 < self.support_threshold < 1, "support_threshold must be in (0, 1)")
        require(0 < self.autocorrelation_threshold < 1, "autocorrelation_threshold in (0, 1)")
        require(self.cnn_batch >= 1 and self.refine_batch >= 1, "batch sizes must be >= 1")
        require(self.adapt_scope in ADAPT_SCOPES, f"adapt_scope must be one of {ADAPT_SCOPES}")
        require(self.figures in FIGURES, f"figures must be one of {FIGURES}, got {self.figures!r}")
        require(self.refine_pixels >= 1, "refine_pixels must be >= 1")
        require(self.max_source_mib > 0, f"max_source_mib must be > 0, got {self.max_source_mib}")
        require(
            self.upper_bound == 0 or OBJECT_SIZE <= self.upper_bound <= PATTERN_SIZE,
            f"upper_bound must be 0 (auto) or in [{OBJECT_SIZE}, {PATTERN_SIZE}]",
        )
        require(
            self.preprocess.size == PATTERN_SIZE,
            f"preprocess crop/bin must give {PATTERN_SIZE} pixels, got {self.preprocess.size}",
        )

    @property
    def max_source_bytes(self) -> int:
        return int(self.max_source_mib * MIB)

    @property
    def config_hash(self) -> str:
        """16 hex digits of sha256 over the canonical JSON (sorted keys) of every field
        that changes a scan's answer: schedule, start, starts, seed, thresholds, beta,
        upper bound, preprocessing, shrink-wrap and verdict; not the batch sizes
        (``NOT_IN_CONFIG_HASH``). A finished scan is redone when it differs.
        """
        fields = {k: v for k, v in self.to_dict().items() if k not in NOT_IN_CONFIG_HASH}
        text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def blind(self) -> RefineSettings:
        """How the random starts are refined."""
        return RefineSettings(self.schedule, self.beta, self.shrinkwrap)

    def run_settings(self, run: int) -> RefineSettings:
        """The settings of run ``run`` (0: the configured start) of a scan."""
        if run == 0 and self.start in GUESS_KINDS and self.guess is not None:
            return self.guess
        return self.blind

    @property
    def iterations(self) -> int:
        """Length of the ``chi2_curve`` column: the longest schedule of any run."""
        return max(self.run_settings(run).iterations for run in range(min(self.starts, 2)))
