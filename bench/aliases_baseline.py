"""BASELINE for bench/aliases.py: consentry/generation/aliases.py as it was before issue 11,
kept verbatim so the bench can compare both in one run. Not used by consentry.

Find the registered subjects a prompt names, by any of their aliases.

The gateway turns a prompt into ``JobFacts.prompt_subjects`` with
:class:`AliasMatcher`; the policy then asks for a grant for each subject found.

Invariants
- Prompt and aliases are compared after the same folding (:func:`fold`): NFKD,
  casefold, NFKD again, combining marks and format characters (zero-width
  spaces and joiners, soft hyphens, bidi controls) dropped, then NFC. So
  ``"Zoë"`` matches ``"zoe"``, ``"José"`` matches ``"JOSE"``, and a zero-width
  space inside a name does not hide it.
- Text is cut into tokens: runs of word characters (``\\w``), except that every word
  character of a script written without spaces between words (CJK ideographs,
  kana, hangul, Thai, Lao, Khmer, Myanmar) is a token of its own. An alias
  matches only a run of whole tokens: ``"Ada"`` matches ``"ada's portrait"`` and
  ``"ADA,"`` but not ``"Adams"`` or ``"canada"``.
- Between two tokens of a multi-word alias the prompt may have any whitespace
  and any of the punctuation that joins parts of a name (hyphens and dashes,
  periods, apostrophes, middle dots), or exactly the alias's own separator with
  whitespace ignored: ``"Ada Lovelace"`` matches ``"ada\\n  lovelace"``,
  ``"Jean-Luc"`` matches ``"jean luc"`` and ``"J. R. R. Tolkien"`` matches
  ``"J.R.R. Tolkien"``, but ``"Ada Lovelace"`` does not match
  ``"Ada, Lovelace"``. Punctuation before the first or after the last token of
  an alias is ignored; an alias with no word characters can never match and is
  dropped.
- Every occurrence of every alias is found, overlapping ones included (a prompt
  naming ``"Ada Lovelace"`` also names a subject registered as ``"Ada"``): a
  refusal gate prefers a false alarm to a miss.
- Cost: building is linear in the total alias length; :meth:`AliasMatcher.find`
  is linear in the prompt's tokens times the aliases sharing a first token
  (a dict from first token to candidates), so thousands of aliases are cheap.

Limits: homoglyphs from other scripts (Cyrillic U+0430 for Latin ``a``),
misspellings and descriptions ("the first programmer") are not detected.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["AliasMatcher", "fold", "tokenize"]

# Scripts written without spaces between words: each character is a token.
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
_TOKEN = re.compile(rf"(?=\w)[{_SPACELESS}]|[^\W{_SPACELESS}]+")
_SPACE = re.compile(r"\s+")
# Punctuation that joins the parts of a name: a gap made only of these (and
# whitespace, already removed) separates the words of any multi-word alias.
_JOINERS = frozenset("-\u2010\u2011\u2012\u2013\u2014\u2015'\u2019\u02bc.\u00b7\u30fb")


def fold(text: str) -> str:
    """Case- and accent-fold ``text`` (see the module docstring)."""
    value = unicodedata.normalize("NFKD", text).casefold()
    value = unicodedata.normalize("NFKD", value)
    value = "".join(
        ch for ch in value if not unicodedata.combining(ch) and unicodedata.category(ch) != "Cf"
    )
    return unicodedata.normalize("NFC", value)


def tokenize(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Fold ``text`` and cut it into ``(tokens, gaps)``.

    ``gaps[i]`` is the text between token ``i - 1`` and token ``i`` with all
    whitespace removed (``gaps[0]`` is whatever precedes the first token).
    """
    folded = fold(text)
    tokens: list[str] = []
    gaps: list[str] = []
    end = 0
    for match in _TOKEN.finditer(folded):
        gaps.append(_SPACE.sub("", folded[end : match.start()]))
        tokens.append(match.group())
        end = match.end()
    return tuple(tokens), tuple(gaps)


@dataclass(frozen=True)
class _Alias:
    subject_id: str
    alias: str
    tokens: tuple[str, ...]
    gaps: tuple[str, ...]  # the separators between tokens, len(tokens) - 1 of them


class AliasMatcher:
    """Finds subjects named in a prompt; built once from ``(subject_id, names)``.

    ``names`` are the subject's display name and aliases; blank names and names
    with no word characters are ignored. Two subjects may share an alias: a
    prompt using it names both.
    """

    def __init__(self, subjects: Iterable[tuple[str, Sequence[str]]]) -> None:
        index: dict[str, list[_Alias]] = {}
        seen: set[tuple[str, tuple[str, ...], tuple[str, ...]]] = set()
        count = 0
        for subject_id, names in subjects:
            if isinstance(names, str):
                names = (names,)
            for name in names:
                tokens, gaps = tokenize(str(name))
                if not tokens:
                    continue
                inner = gaps[1:]
                key = (str(subject_id), tokens, inner)
                if key in seen:
                    continue
                seen.add(key)
                entry = _Alias(str(subject_id), str(name), tokens, inner)
                index.setdefault(tokens[0], []).append(entry)
                count += 1
        for entries in index.values():
            entries.sort(key=lambda e: -len(e.tokens))  # longest first at one position
        self._index = index
        self._count = count

    def __len__(self) -> int:
        """How many distinct (subject, alias) pairs can match."""
        return self._count

    def find(self, prompt: str) -> list[tuple[str, str]]:
        """``(subject_id, alias)`` for every alias named in ``prompt``.

        Each pair appears once, in the order of its first occurrence in the
        prompt (longer aliases first where several start at the same word);
        ``alias`` is the name as registered, not as written in the prompt.
        """
        tokens, gaps = tokenize(prompt)
        soft = [all(ch in _JOINERS for ch in gap) for gap in gaps]
        found: dict[tuple[str, str], None] = {}
        count = len(tokens)
        for start, token in enumerate(tokens):
            for entry in self._index.get(token, ()):
                stop = start + len(entry.tokens)
                if (
                    stop <= count
                    and tokens[start:stop] == entry.tokens
                    and all(
                        soft[start + k] or gaps[start + k] == entry.gaps[k - 1]
                        for k in range(1, len(entry.tokens))
                    )
                ):
                    found.setdefault((entry.subject_id, entry.alias), None)
        return list(found)

    def subjects_in(self, prompt: str) -> tuple[str, ...]:
        """The distinct subject ids named in ``prompt``, in order of first mention."""
        return tuple(dict.fromkeys(subject for subject, _ in self.find(prompt)))
