"""Schedule parsing: round trip, nesting, the paper's schedule, errors with positions."""

from __future__ import annotations

import pytest

from cdiflow.errors import InputError, ScheduleSyntaxError
from cdiflow.phasing.schedule import PAPER_SCHEDULE, Repeat, Schedule, Step, parse


@pytest.mark.parametrize(
    "text",
    [
        "5*(100*HIO+20*ER)",
        "2*(10*HIO)",
        "ER",
        "3*(2*(HIO+ER)+RAAR)+20*ER",
        "(10*HIO)",
        " 3 * ( 20*ER + 180*HIO ) + 20*ER ",
    ],
)
def test_round_trip(text):
    s = parse(text)
    assert parse(str(s)) == s
    assert str(parse(str(s))) == str(s)


def test_structure_and_expansion():
    s = parse("2*(10*HIO)+3*ER")
    assert s == Schedule((Repeat(2, (Step("HIO", 10),)), Step("ER", 3)))
    assert s.expand() == ("HIO",) * 20 + ("ER",) * 3
    nested = parse("2*(HIO+2*(ER))")
    assert nested.expand() == ("HIO", "ER", "ER") * 2


def test_paper_schedule_is_600_er_hio_iterations():
    assert len(PAPER_SCHEDULE) == 600
    assert set(PAPER_SCHEDULE.expand()) == {"ER", "HIO"}
    assert PAPER_SCHEDULE.expand()[-1] == "ER"
    assert parse(str(PAPER_SCHEDULE)) == PAPER_SCHEDULE


@pytest.mark.parametrize(
    "text, position, words",
    [
        ("5*(100*HIO+20*FOO)", 14, "unknown algorithm 'FOO'"),
        ("5*(HIO", 6, "expected ')'"),
        ("HIO+", 4, "found end of text"),
        ("2*3*ER", 2, "found '3'"),
        ("HIO ER", 4, "unexpected 'ER'"),
        ("0*ER", 0, "at least 1"),
        ("5 HIO", 2, "expected '*'"),
        ("HIO$", 3, "unexpected character '$'"),
        ("", 0, "found end of text"),
        ("er", 0, "unknown algorithm 'er'"),
    ],
)
def test_syntax_errors_point_at_the_position(text, position, words):
    with pytest.raises(ScheduleSyntaxError) as info:
        parse(text)
    err = info.value
    assert err.position == position
    assert words in err.reason
    assert isinstance(err, InputError)
    # the message shows the text and a caret under the offending character
    lines = str(err).splitlines()
    assert lines[1].strip() == text.strip() or text == ""
    assert lines[2].index("^") - 2 == position
