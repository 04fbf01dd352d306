"""Typed phasing schedules: ``"5*(100*HIO+20*ER)"`` as frozen data.

Grammar (whitespace is ignored)::

    schedule := term ('+' term)*
    term     := [INT '*'] (NAME | '(' schedule ')')

``NAME`` is one of ``ALGORITHMS``; a bare ``NAME`` means one iteration, a bare group
means one repetition. Groups nest, and one-step groups such as ``"2*(10*HIO)"`` work.
``str(schedule)`` writes the canonical form, and ``parse(str(s)) == s`` for every
schedule. A syntax error raises ``ScheduleSyntaxError`` with the position of the offending
character.
"""

from __future__ import annotations

import dataclasses
import re

from cdiflow.errors import ScheduleSyntaxError

PROJECTIONS = ("ER", "HIO", "RAAR")
"""The projection algorithms of the engine (``cdiflow.phasing.projections``)."""

GRADIENT = "ADAM"
"""One step of Adam on the object through the forward model (``cdiflow.phasing.gradient``)."""

ALGORITHMS = (*PROJECTIONS, GRADIENT)
"""Algorithm names a schedule may use; ``cdiflow.phasing.segments`` runs a mixed schedule."""


@dataclasses.dataclass(frozen=True)
class Step:
    """``count`` consecutive iterations of one algorithm, e.g. ``100*HIO``."""

    algorithm: str
    count: int = 1

    def __str__(self) -> str:
        return f"{self.count}*{self.algorithm}"

    def expand(self) -> tuple[str, ...]:
        return (self.algorithm,) * self.count


@dataclasses.dataclass(frozen=True)
class Repeat:
    """A group ``count*( ... )`` of terms run ``count`` times in a row."""

    count: int
    body: tuple[Step | Repeat, ...]

    def __str__(self) -> str:
        return f"{self.count}*(" + "+".join(str(t) for t in self.body) + ")"

    def expand(self) -> tuple[str, ...]:
        one = tuple(a for term in self.body for a in term.expand())
        return one * self.count


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A whole schedule: terms run in order. ``expand()`` gives one name per iteration."""

    terms: tuple[Step | Repeat, ...]

    def __str__(self) -> str:
        return "+".join(str(t) for t in self.terms)

    def expand(self) -> tuple[str, ...]:
        return tuple(a for term in self.terms for a in term.expand())

    def __len__(self) -> int:
        return len(self.expand())


# Fig. 5(e) of the paper shows an ER/HIO switch schedule of 600 iterations without
# numbers; this is the usual Robinson & Harder (2009) form of it: five blocks of
# 100 HIO then 20 ER, so the run ends on ER. Shrink-wrap (after 100, every 10) is set
# separately, in ``cdiflow.phasing.shrinkwrap.ShrinkWrap``.
PAPER_SCHEDULE = Schedule((Repeat(5, (Step("HIO", 100), Step("ER", 20))),))

_TOKEN = re.compile(r"\s*(?:(?P<int>\d+)|(?P<name>[A-Za-z_][A-Za-z_0-9]*)|(?P<op>[*+()]))")


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if m is None:
                bad = pos + len(text[pos:]) - len(text[pos:].lstrip())
                raise ScheduleSyntaxError(text, bad, f"unexpected character {text[bad]!r}")
            kind = m.lastgroup
            self.tokens.append((kind, m.group(kind), m.start(kind)))
            pos = m.end()
        self.i = 0

    def peek(self) -> tuple[str, str, int]:
        if self.i < len(self.tokens):
            return self.tokens[self.i]
        return ("end", "", len(self.text))

    def take(self) -> tuple[str, str, int]:
        tok = self.peek()
        self.i += 1
        return tok

    def fail(self, tok: tuple[str, str, int], reason: str):
        raise ScheduleSyntaxError(self.text, tok[2], reason)

    def schedule(self) -> tuple[Step | Repeat, ...]:
        terms = [self.term()]
        while self.peek()[1] == "+":
            self.take()
            terms.append(self.term())
        return tuple(terms)

    def term(self) -> Step | Repeat:
        count = 1
        tok = self.peek()
        if tok[0] == "int":
            self.take()
            count = int(tok[1])
            if count < 1:
                self.fail(tok, "a repeat count must be at least 1")
            star = self.take()
            if star[1] != "*":
                self.fail(star, "expected '*' after a count")
            tok = self.peek()
        if tok[0] == "name":
            self.take()
            if tok[1] not in ALGORITHMS:
                self.fail(tok, f"unknown algorithm {tok[1]!r} (known: {', '.join(ALGORITHMS)})")
            return Step(tok[1], count)
        if tok[1] == "(":
            self.take()
            body = self.schedule()
            close = self.take()
            if close[1] != ")":
                self.fail(close, "expected ')' or '+'")
            return Repeat(count, body)
        what = "end of text" if tok[0] == "end" else repr(tok[1])
        self.fail(tok, f"expected an algorithm name, a count or '(' but found {what}")


def parse(text: str) -> Schedule:
    """Parse a schedule string such as ``"5*(100*HIO+20*ER)"`` into a ``Schedule``.

    Raises
    ------
    ScheduleSyntaxError
        With ``.position`` at the offending character (unknown algorithm, missing count,
        unbalanced parenthesis, trailing text, empty schedule).
    """
    parser = _Parser(text)
    terms = parser.schedule()
    tok = parser.peek()
    if tok[0] != "end":
        parser.fail(tok, f"unexpected {tok[1]!r} after a complete schedule")
    return Schedule(terms)


def as_schedule(schedule: Schedule | str) -> Schedule:
    """Accept a ``Schedule`` or its string form."""
    return schedule if isinstance(schedule, Schedule) else parse(schedule)
