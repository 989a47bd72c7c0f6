"""The number guard: every figure a user reads comes from a tool result.

The model is told to write a figure only as a citation of a result cell,
``{{t1.r2.spend}}`` (table ``t1`` of this question, row 2, column ``spend``; see
``copilot.results``).  The guard replaces each citation by the cell's formatted value
and masks any other figure with ``▒▒``; one mask (or a citation of a cell that does not
exist) marks the answer unverified.

What counts as a figure (the policy)
------------------------------------
A *figure* is a token that starts with a digit and runs over letters, digits, ``%`` and
``×`` and over ``,`` ``.`` ``:`` ``/`` ``-`` when a letter or digit follows them:
``1,234.50``, ``3.2x``, ``50%``, ``2026-12-01``, ``14:15``, ``5-10``, ``4th``.  A
currency sign or a minus before it stays as written, so ``$1,234`` reads ``$▒▒``.

Not figures, passed through as written:

* digits inside a word that starts with a letter: ``Q3``, ``H1``, ``B2B``, ``t1``
  (except a currency code glued to digits, ``USD100``, which is masked);
* a value of a text, id, date or time cell of this question's results (entity names
  and ids such as ``Summer Sale 2026`` or ``120210000123``, the days and buckets of a
  breakdown, the periods' first and last days), matched whole at a word boundary;
* a figure the user wrote in the question, exactly as written (``top 5``, ``last 7
  days``, ``ROAS below 1.5``): echoing the user is not inventing;
* the year of any period day of the results (``in 2026``);
* ordinals up to 31 (``3rd``, ``21st``): ranks and days of the month;
* a day of the month right after a month name (``December 1``) when that day is a
  period day of the results;
* an ordered-list marker at the start of a line (``1.``, ``2)``).

Everything else is masked: money, percentages, decimals, counts, multiples, and
integers the question did not contain.  Spelled-out numbers ("three campaigns") are not
detected; the system prompt forbids them for data.  Dates should be written as the
results write them (ISO) or cited.

Streaming
---------
:meth:`NumberGuard.feed` takes the answer's text deltas as they arrive and returns what
may be shown now; :meth:`NumberGuard.finish` flushes the rest.  Each decision waits
until the characters it depends on have arrived (a figure is open until a character
that cannot extend it; a citation until ``}}``; a name while the text could still become
it), so the concatenated output, the citations and the verdict are the same however
the text is split.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from copilot.events import Citation

MASK: Final = "▒▒"
MAX_CITATION: Final = 96  # characters between "{{" and "}}"
_SEPARATORS: Final = ",.:/-"
_FIGURE_CHARS: Final = "%×"
_MONTHS: Final = {
    name: n
    for n, names in enumerate(
        [("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"), ("may",), ("june", "jun"),
         ("july", "jul"), ("august", "aug"), ("september", "sep", "sept"), ("october", "oct"),
         ("november", "nov"), ("december", "dec")], start=1)
    for name in names
}
_ORDINAL = re.compile(r"([0-9]{1,2})(st|nd|rd|th)")
_DAY = re.compile(r"([0-9]{1,2})(st|nd|rd|th)?")
_ISO_DAY = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_CURRENCY_GLUED = re.compile(r"[A-Z]{3}[0-9].*")


def _digit(c: str) -> bool:
    return unicodedata.category(c) == "Nd"


def _wordch(c: str) -> bool:
    return c.isalnum() or c == "_"


@dataclass(frozen=True, slots=True)
class Allowed:
    """What may appear without a citation (see the policy above)."""

    literals: frozenset[str] = frozenset()  # figures, exactly as written
    names: tuple[str, ...] = ()  # digit-bearing dimension values, longest first
    month_days: frozenset[tuple[int, int]] = frozenset()  # (month, day) of period days

    @staticmethod
    def build(question: str, dimension_values: set[str] | frozenset[str]) -> Allowed:
        literals = set(figures_in(question))
        month_days: set[tuple[int, int]] = set()
        for v in dimension_values:
            m = _ISO_DAY.match(v)
            if m:
                literals.add(m.group(1))
                month_days.add((int(m.group(2)), int(m.group(3))))
        names = sorted({v for v in dimension_values if any(_digit(c) for c in v) and v.strip() == v and v},
                       key=lambda v: (-len(v), v))
        return Allowed(frozenset(literals), tuple(names), frozenset(month_days))


@dataclass
class _State:
    prev: str = ""  # the last character consumed
    last_word: str | None = None  # the last word, while only spaces followed it
    line_start: bool = True  # only spaces since the last newline


@dataclass
class NumberGuard:
    """Incremental; one per answer.  ``cell(ref)`` gives a citation's formatted value
    (None: no such cell); ``allowed()`` is asked again when the results change."""

    cell: Callable[[str], str | None]
    allowed: Callable[[], Allowed]
    citations: list[Citation] = field(default_factory=list)
    masked: int = 0
    bad_citations: int = 0
    _buf: str = ""
    _st: _State = field(default_factory=_State)

    @property
    def verified(self) -> bool:
        return self.masked == 0 and self.bad_citations == 0

    def feed(self, chunk: str) -> str:
        self._buf += chunk
        return self._drain(final=False)

    def finish(self) -> str:
        return self._drain(final=True)

    # -- scanning ---------------------------------------------------------------------

    def _drain(self, final: bool) -> str:
        s, i, out = self._buf, 0, []
        allowed = self.allowed()
        while i < len(s):
            step = self._step(s, i, final, allowed)
            if step is None:
                break
            end, text = step
            out.append(text)
            i = end
        self._buf = s[i:]
        return "".join(out)

    def _consumed(self, text: str, word: str | None = None) -> None:
        st = self._st
        st.prev = text[-1]
        if word is not None:
            st.last_word, st.line_start = word, False
            return
        for ch in text:
            if ch == "\n":
                st.line_start = True
            elif ch not in " \t":
                st.line_start = False
        if text.strip(" \t\r\n"):
            st.last_word = None

    def _step(self, s: str, i: int, final: bool, allowed: Allowed) -> tuple[int, str] | None:
        """The token at ``i`` and what to show for it; None to wait for more text."""
        c = s[i]
        if c == "{":
            got = self._citation(s, i, final)
            if got is not None or not final:
                return got
        at_boundary = not self._st.prev or not _wordch(self._st.prev)
        if at_boundary and allowed.names:
            got = self._name(s, i, final, allowed.names)
            if got is not None:
                if got[1] == "":  # wait
                    return None
                return got
        if _digit(c):
            return self._figure(s, i, final, allowed)
        if c.isalpha() or c == "_":
            j = i
            while j < len(s) and _wordch(s[j]):
                j += 1
            if j == len(s) and not final:
                return None
            word = s[i:j]
            if _CURRENCY_GLUED.fullmatch(word):
                self.masked += 1
                self._consumed(word)
                return j, word[:3] + MASK
            self._consumed(word, word)
            return j, word
        # plain characters up to the next one that may start something
        firsts = {n[0] for n in allowed.names}
        j = i + 1
        while j < len(s) and not (s[j] == "{" or _wordch(s[j]) or s[j] in firsts):
            j += 1
        text = s[i:j]
        self._consumed(text)
        return j, text

    def _citation(self, s: str, i: int, final: bool) -> tuple[int, str] | None:
        """``{{ref}}`` -> the cell's value; None to wait, or (with ``final``) when this
        ``{`` starts no citation."""
        if i + 1 == len(s):
            return None
        if s[i + 1] != "{":
            self._consumed("{")
            return i + 1, "{"
        window_end = i + 2 + MAX_CITATION + 2
        j = s.find("}}", i + 2, window_end)
        if j == -1:
            if not final and len(s) < window_end:
                return None
            self._consumed("{")
            return i + 1, "{"
        ref = s[i + 2 : j].strip()
        value = self.cell(ref)
        self._consumed(s[i : j + 2])
        self._st.last_word = None
        if value is None:
            self.bad_citations += 1
            return j + 2, MASK
        self.citations.append(Citation(ref, value))
        return j + 2, value

    def _name(self, s: str, i: int, final: bool, names: tuple[str, ...]) -> tuple[int, str] | None:
        """A digit-bearing dimension value at ``i`` (longest first); ``(i, "")`` to wait;
        None when none can match here."""
        avail = s[i:]
        if not final and any(len(avail) < len(n) and n.startswith(avail) for n in names):
            return i, ""
        for n in names:
            if not avail.startswith(n):
                continue
            after = i + len(n)
            if after == len(s) and not final:
                return i, ""
            if after == len(s) or not (_wordch(s[after]) and _wordch(n[-1])):
                self._consumed(n)
                return after, n
        return None

    def _figure(self, s: str, i: int, final: bool, allowed: Allowed) -> tuple[int, str] | None:
        j = i
        while True:
            while j < len(s) and (_wordch(s[j]) or s[j] in _FIGURE_CHARS):
                j += 1
            if j < len(s) and s[j] in _SEPARATORS:
                if j + 1 == len(s):
                    if not final:
                        return None
                    break
                if _wordch(s[j + 1]):
                    j += 1
                    continue
            break
        if j == len(s) and not final:
            return None
        tok = s[i:j]
        after = s[j] if j < len(s) else ""
        st = self._st
        ok = (
            tok in allowed.literals
            or _ordinal_ok(tok)
            or (st.last_word is not None and _month_day_ok(st.last_word, tok, allowed.month_days))
            or (st.line_start and tok.isdigit() and len(tok) <= 2 and after in (".", ")"))
        )
        self._consumed(tok)
        if ok:
            return j, tok
        self.masked += 1
        return j, MASK


def _ordinal_ok(tok: str) -> bool:
    m = _ORDINAL.fullmatch(tok)
    return m is not None and 1 <= int(m.group(1)) <= 31


def _month_day_ok(word: str, tok: str, month_days: frozenset[tuple[int, int]]) -> bool:
    month = _MONTHS.get(word.lower())
    m = _DAY.fullmatch(tok)
    return month is not None and m is not None and (month, int(m.group(1))) in month_days


def figures_in(text: str) -> list[str]:
    """The figures of ``text`` by the guard's own tokenizer (for the question's echo)."""
    found: list[str] = []

    class _Collect(NumberGuard):
        def _figure(self, s: str, i: int, final: bool, allowed: Allowed) -> tuple[int, str] | None:
            got = super()._figure(s, i, final, allowed)
            if got is not None:
                found.append(s[i : got[0]])
            return got

    g = _Collect(cell=lambda _: None, allowed=Allowed)
    g.feed(text)
    g.finish()
    return found
