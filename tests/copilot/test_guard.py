"""The number guard: its policy case by case, the same result however the stream is
split, and no figure through that was not cited or allowed."""

from __future__ import annotations

import itertools
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copilot.guard import MASK, Allowed, NumberGuard, figures_in
from copilot.results import Column, ResultTable, Tables

TABLES = Tables()
TABLES.add(ResultTable(
    "metrics_query",
    (Column("campaign", "text"), Column("day", "date"), Column("spend", "money"), Column("ctr", "percent")),
    (("Summer Sale 2031", date(2026, 12, 3), Decimal("1234.5"), Decimal("0.0125")),
     ("Campaign 88", date(2026, 12, 4), Decimal("99.999"), None)),
    currency="USD", period_start=date(2026, 12, 1), period_end=date(2026, 12, 7)))
QUESTION = "Which of my top 5 campaigns had ROAS below 1.5 in the last 7 days?"


def guard(question: str = QUESTION, tables: Tables = TABLES) -> NumberGuard:
    allowed = Allowed.build(question, tables.dimension_values())
    return NumberGuard(cell=tables.cell, allowed=lambda: allowed)


def whole(text: str, question: str = QUESTION) -> tuple[str, NumberGuard]:
    g = guard(question)
    return g.feed(text) + g.finish(), g


@pytest.mark.parametrize(("text", "shown", "masked"), [
    # citations are replaced by the cell, formatted
    ("spent {{t1.r1.spend}} at {{ t1.r1.ctr }}", "spent 1,234.50 USD at 1.25%", 0),
    ("{{t1.r2.ctr}}", "n/a", 0),
    # any other figure is masked; a sign or currency symbol stays
    ("about $1,234 or 12.5% or 3.2x, -40 and 1.234", f"about ${MASK} or {MASK} or {MASK}, -{MASK} and {MASK}", 5),
    ("3 campaigns", f"{MASK} campaigns", 1),
    ("USD100 but Q3, H1, B2B and t1 are words", f"USD{MASK} but Q3, H1, B2B and t1 are words", 1),
    # the question's own figures may be echoed
    ("your top 5 over 7 days, ROAS below 1.5", "your top 5 over 7 days, ROAS below 1.5", 0),
    ("ROAS below 1.50", f"ROAS below {MASK}", 1),
    # names and dates of the results, whole, at word boundaries
    ("Summer Sale 2031 and Campaign 88", "Summer Sale 2031 and Campaign 88", 0),
    ("Summer Sale 2030", f"Summer Sale {MASK}", 1),
    ("Campaign 880", f"Campaign {MASK}", 1),
    ("on 2026-12-03, not 2026-12-09", f"on 2026-12-03, not {MASK}", 1),
    ("in 2026, not 2025", f"in 2026, not {MASK}", 1),
    ("December 3 and Dec 1, not December 9", f"December 3 and Dec 1, not December {MASK}", 1),
    # ordinals up to 31, list markers at a line start
    ("the 3rd and the 31st, not the 32nd", f"the 3rd and the 31st, not the {MASK}", 1),
    ("1. first\n2) second\n in 3. words", f"1. first\n2) second\n in {MASK}. words", 1),
    # braces that are not citations stay text; a cell that does not exist is masked
    ("{oops} {{t1.r9.spend}} {{t2.r1.spend}} {{hello}}", f"{{oops}} {MASK} {MASK} {MASK}", 3),
    ("an open {{t1.r1.spend and more", "an open {{t1.r1.spend and more", 0),
])
def test_policy(text: str, shown: str, masked: int) -> None:
    out, g = whole(text)
    assert out == shown
    assert g.masked + g.bad_citations == masked
    assert g.verified == (masked == 0)


def test_citations_are_recorded_with_their_values() -> None:
    _, g = whole("{{t1.r1.campaign}}: {{t1.r1.spend}}, {{t1.r9.spend}}")
    assert [(c.ref, c.value) for c in g.citations] == [("t1.r1.campaign", "Summer Sale 2031"),
                                                       ("t1.r1.spend", "1,234.50 USD")]
    assert g.bad_citations == 1


def test_figures_of_the_question() -> None:
    assert figures_in(QUESTION) == ["5", "1.5", "7"]
    assert figures_in("over $1,000.50 on 2026-12-01, Q4 and 3rd") == ["1,000.50", "2026-12-01", "3rd"]


# ---- split invariance -------------------------------------------------------------------

PIECES = st.sampled_from([
    "{{t1.r1.spend}}", "{{t1.r2.ctr}}", "{{ t1.r1.campaign }}", "{{t9.r1.spend}}", "{{bad}}", "{", "}", "{{", "}}",
    "Summer Sale 2031", "Summer Sale", "Summer Sale 20", "Campaign 88", "Campaign 8", "Campaign 880", "2026-12-03", "2026-12-0", "December", "Dec",
    "3rd", "Q3", "USD100", "1,234.50", "12.5%", "5", "7", "1.5", "top", "x", "2x", "1.", "10)", "é", "_", "ab",
    " ", " ", "\n", ". ", ", ", "$", "-", ":", "/", "%",
]) | st.text(alphabet=" {}0123456789.,:%-/abcQDS\n$", max_size=6)


def _split(text: str, cuts: list[int]) -> list[str]:
    bounds = sorted({0, len(text), *[c % (len(text) + 1) for c in cuts]})
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=400, deadline=None)
@given(pieces=st.lists(PIECES, max_size=30), cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40))
def test_same_result_however_the_stream_is_split(pieces: list[str], cuts: list[int]) -> None:
    text = "".join(pieces)
    expected, g1 = whole(text)
    g2 = guard()
    got = "".join(g2.feed(chunk) for chunk in _split(text, cuts)) + g2.finish()
    assert got == expected
    assert (g2.citations, g2.masked, g2.bad_citations) == (g1.citations, g1.masked, g1.bad_citations)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=60), cuts=st.lists(st.integers(min_value=0, max_value=100), max_size=20))
def test_split_invariance_on_any_unicode(text: str, cuts: list[int]) -> None:
    expected, _ = whole(text)
    g = guard()
    assert "".join(g.feed(c) for c in _split(text, cuts)) + g.finish() == expected


# ---- no invented figures ------------------------------------------------------------------

FIGURE = st.from_regex(r"[1-9][0-9]{0,3}([,.][0-9]{1,3}){0,2}%?", fullmatch=True)
WORD = st.from_regex(r"[a-zA-Z]{1,8}", fullmatch=True)
SEP = st.sampled_from([" ", ", ", " and ", "; ", " (", ") "])


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.tuples(st.one_of(FIGURE.map(lambda f: ("fig", f)), WORD.map(lambda w: ("word", w))), SEP),
                      max_size=25))
def test_no_figure_passes_without_a_citation(parts: list[tuple[tuple[str, str], str]]) -> None:
    """With nothing allowed (no question, no results), every generated figure is masked
    and no digit reaches the output; words are untouched.  (The text starts with a word:
    a figure opening a line followed by ")" or "." is a list marker, allowed by policy.)"""
    text = "Answer: " + "".join(tok + sep for (_, tok), sep in parts)
    g = NumberGuard(cell=lambda _: None, allowed=Allowed)
    out = g.feed(text) + g.finish()
    assert not any(ch.isdigit() for ch in out)
    assert g.masked == sum(1 for (kind, _), _ in parts if kind == "fig")
    assert out.count(MASK) == g.masked
