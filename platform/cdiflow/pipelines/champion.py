"""The champion rule: when the alias ``champion`` moves to a newly registered version.

The alias moves only when the new version's validation chi^2 is lower than the current
champion's, measured on the same evaluation set (the version tag ``eval_fingerprint``;
the caller rescores the champion when the sets differ); the comparison is recorded as the
version tag ``champion_decision`` either way. A non-finite score is refused; a champion
without a finite score counts as infinitely bad. The client is passed in, so nothing here
imports mlflow.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from typing import Any

from cdiflow.errors import NonFiniteScore
from cdiflow.pipelines.tracking_store import CHAMPION, FINGERPRINT_TAG, SCORE_METRIC


@dataclasses.dataclass(frozen=True)
class Promotion:
    """The outcome of registering a version and applying the champion rule.

    ``champion_score`` is what the new version was compared against: the champion's
    recorded score, or its score on the new version's evaluation set when it was rescored
    (``champion_rescored``; ``rescored_fingerprint`` names that set). None when there was
    no champion, or when its score is unusable (missing, NaN or inf: counted as
    infinitely bad). ``reason`` says in words why the alias moved or stayed.
    """

    name: str
    version: str
    score: float
    champion_version: str | None  # the champion before this decision
    champion_score: float | None
    promoted: bool
    eval_fingerprint: str | None = None  # of the set ``score`` was measured on
    champion_fingerprint: str | None = None  # the champion's recorded one
    champion_recorded_score: float | None = None  # the champion's own val_chi2 tag
    champion_rescored: bool = False
    rescored_fingerprint: str | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def finite_score(value: Any) -> float:
    """``value`` as a finite float, or ``NonFiniteScore`` (nothing ranks against NaN)."""
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise NonFiniteScore(f"{SCORE_METRIC} must be a number, got {value!r}") from None
    if not math.isfinite(score):
        raise NonFiniteScore(
            f"{SCORE_METRIC} is {score}: a non-finite validation score cannot rank models "
            "(the run probably diverged); nothing was registered"
        )
    return score


def _tag_score(tag: str | None) -> float | None:
    """A champion's recorded score tag as a finite float, or None (missing / nan / inf)."""
    try:
        score = float(tag) if tag is not None else math.nan
    except ValueError:
        return None
    return score if math.isfinite(score) else None


def apply_champion_rule(
    client,
    name: str,
    version: str,
    score: float,
    fingerprint: str | None = None,
    rescore: Callable[[str], float] | None = None,
) -> Promotion:
    """Move ``champion`` to ``version`` only if its score beats the champion's; record why.

    A champion whose recorded score is missing, NaN or inf counts as infinitely bad, so
    any finite score replaces it. A non-finite ``score`` raises ``NonFiniteScore``
    before the alias is touched.

    Scores are only compared on the same evaluation set. When ``fingerprint`` (the
    candidate's set) differs from the champion's ``eval_fingerprint`` tag (or the
    champion has none), the champion is scored on the candidate's set with
    ``rescore(champion_version)`` first; without ``rescore`` the alias stays where it
    is (the scores are not comparable). With ``fingerprint`` None the recorded scores
    are compared as they are (callers that cannot name their set). The decision,
    including whether and on which set the champion was rescored, is stored as the
    version tag ``champion_decision`` (JSON).
    """
    score = finite_score(score)
    current = client.get_registered_model(name).aliases.get(CHAMPION)
    current = None if current is None else str(current)
    fields: dict[str, Any] = {}
    if current is None:
        promoted, reason = True, "no champion yet"
    elif current == str(version):
        promoted, reason = True, "already champion"
    else:
        promoted, reason, fields = _against_champion(
            client, name, current, score, fingerprint, rescore
        )
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, str(version))
    decision = Promotion(
        name=name,
        version=str(version),
        score=score,
        champion_version=current,
        champion_score=fields.pop("champion_score", None),
        promoted=promoted,
        eval_fingerprint=fingerprint,
        reason=reason,
        **fields,
    )
    client.set_model_version_tag(
        name, str(version), "champion_decision", json.dumps(decision.to_dict())
    )
    return decision


def _against_champion(
    client,
    name: str,
    current: str,
    score: float,
    fingerprint: str | None,
    rescore: Callable[[str], float] | None,
) -> tuple[bool, str, dict[str, Any]]:
    """(promoted, reason, Promotion fields) of ``score`` against champion ``current``."""
    tags = client.get_model_version(name, current).tags
    recorded = _tag_score(tags.get(SCORE_METRIC))
    theirs = tags.get(FINGERPRINT_TAG)
    fields = {"champion_fingerprint": theirs, "champion_recorded_score": recorded}
    compared, how = recorded, f"recorded {SCORE_METRIC}"
    comparable = fingerprint is None or theirs == fingerprint
    if not comparable and rescore is not None:
        rescored = _tag_score(rescore(current))
        fields |= {"champion_rescored": True, "rescored_fingerprint": fingerprint}
        compared, how = rescored, f"{SCORE_METRIC} rescored on {fingerprint}"
        comparable = True
    fields["champion_score"] = compared
    if not comparable:
        reason = (
            f"champion v{current} was scored on evaluation set {theirs} and this version "
            f"on {fingerprint}, and no rescore was given: not comparable, alias kept"
        )
        return False, reason, fields
    if compared is None:
        return True, f"champion v{current} has no finite {how}: counts as infinitely bad", fields
    promoted = score < compared
    verb = "beats" if promoted else "does not beat"
    return promoted, f"{score:.6g} {verb} champion v{current}'s {how} {compared:.6g}", fields
