"""Find the registered subjects a prompt names, by any of their aliases, however written.

The gateway turns a prompt into ``JobFacts.prompt_subjects`` with
:class:`AliasMatcher`; the policy then asks for a grant for each subject found.
A miss lets a named person through, so the matcher works on *skeletons*:
prompt and aliases go through the same normalisation, and an alias matches
where its skeleton letters appear in the prompt's under the rules below.
Classes of writing are handled, not examples: every rule is stated over
Unicode properties or whole tables, never a list of known tricks.

Skeletons (invisible code points dropped, TR39 look-alikes, compatibility forms,
transliteration, case folding, word breaks) are :mod:`consentry.gate.skeleton`;
this module matches aliases on them.

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

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import permutations

from consentry.gate.skeleton import (
    LEET,
    LEET_CHARS,
    RTL_CONTROLS,
    WORD,
    WORD_OR_DIGITS,
    Words,
    contract_pairs,
    scan,
    skeleton,
    skeleton_text,
)

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
    shape = _shape(frozenset(breaks), form.breaks, n, single_letters, edit is not None, tight)
    if shape is None or (edit is not None and n < MIN_EDIT):
        return None
    flags = (("coarse", coarse), ("edit", edit is not None), ("camel", soft_edge))
    return "+".join([shape, *(name for name, on in flags if on)])


def _shape(
    seen: frozenset[int],
    breaks: frozenset[int],
    n: int,
    single_letters: bool,
    edited: bool,
    tight: Callable[[], bool],
) -> str | None:
    """How a window's word breaks ``seen`` relate to a form's ``breaks`` (``n`` letters):
    ``exact``, ``run-together``, ``spaced`` or ``split``, or None where the short-name
    limits refuse that shape (a split window never takes an edit)."""
    if seen == breaks:
        return "exact"
    if seen < breaks:
        return "run-together" if n >= MIN_LOOSE else None
    if single_letters:
        return "spaced" if n >= MIN_SPACED else None
    if edited or n < MIN_SPACED or (n < MIN_LOOSE and not tight()):
        return None
    return "split"


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
                mapped = skeleton_text(str(name))
                digits = any(c.isdigit() for c in mapped)
                pattern = WORD_OR_DIGITS if digits else WORD
                parts = tuple(Words(mapped, pattern).texts)
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
                coarse = Words(mapped.translate(LEET), WORD).texts
                if len("".join(coarse)) >= MIN_COARSE:
                    self._coarse.add(entry, coarse)
                    self._contracted.add(entry, [contract_pairs(w) for w in coarse])
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
        if RTL_CONTROLS.search(prompt):
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
        mapped = skeleton_text(prompt, marks=True)
        found: dict[_Entry, tuple[int, int, str]] = {}
        # One-edit look-ups run in the coarse view, which holds every form they apply to;
        # in the plain view only where the coarse view is not a letter-for-letter image of
        # it (digits or symbols turned letters). The contracted view (rn as m, vv as w) is
        # looked up exactly: a contraction changes lengths, so edits there would not line up.
        plain_edits = bool(LEET_CHARS.search(mapped))
        if self._plain:
            _Search(self._plain, Words(mapped, WORD), found, edits=plain_edits).run()
        if self._digits and any(c.isdigit() for c in mapped):
            _Search(self._digits, Words(mapped, WORD_OR_DIGITS), found, edits=False).run()
        if self._coarse:
            coarse = mapped.translate(LEET)
            _Search(self._coarse, Words(coarse, WORD), found, edits=True).run()
            if "rn" in coarse or "vv" in coarse or "m" in coarse or "w" in coarse:
                contracted = Words(coarse, WORD, contract=True)
                _Search(self._contracted, contracted, found, edits=False).run()
        if not found:
            return []
        origin = scan(prompt, marks=True).origin
        ordered = sorted(found.items(), key=lambda kv: (kv[1][0], -kv[0].letters, kv[0].order))
        return [
            AliasMatch(entry.subject_id, entry.alias, origin[s], origin[e - 1] + 1, rule)
            for entry, (s, e, rule) in ordered
        ]


class _Search:
    """Every window of one view's ``words`` that matches a form of ``index``, kept in
    ``found`` (the hot loop: each step costs one string join and a few dict look-ups).

    From each word a window grows one word at a time while its joined letters are a
    prefix of some form, or (with ``edits``) while it may still be one edit from a form
    of at least ``MIN_EDIT`` letters; matches are kept in the order they are met."""

    def __init__(
        self, index: _Index, words: Words, found: dict[_Entry, tuple[int, int, str]], edits: bool
    ) -> None:
        self.index = index
        self.words = words
        self.found = found
        self.max_edit = index.max_edit_len if edits and index.by_head else 0
        by_tail = index.by_tail
        # a window ending in a word of 4 letters or more has that word's last 4 letters
        self.tails = (
            [by_tail.get(w[-4:]) if len(w) >= 4 else None for w in words.texts]
            if self.max_edit
            else []
        )

    def run(self) -> None:
        for first in range(len(self.words.texts)):
            self._from(first)

    def _from(self, first: int) -> None:
        """Grow windows from word ``first`` until no form can match a longer one."""
        texts, hidden = self.words.texts, self.words.hidden
        index, max_edit = self.index, self.max_edit
        exact, prefixes, by_head, by_tail = (
            index.exact,
            index.prefixes,
            index.by_head,
            index.by_tail,
        )
        max_len, edit_words, min_edit = index.max_len, index.edit_words, MIN_EDIT - 1
        joined = ""
        breaks: list[int] = []
        single = True
        head: dict[int, list[_Form]] | None = None
        for last in range(first, len(texts)):
            word = texts[last]
            if last > first and not hidden[last]:
                breaks.append(len(joined))
            joined += word
            single = single and len(word) == 1
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
                tail = self.tails[last] if len(word) >= 4 else by_tail.get(joined[-4:])
                buckets = (head, tail)
            if forms or any(buckets):
                self._window(first, last, joined, breaks, single, forms or (), buckets)
            if not edit_ok and joined not in prefixes:
                break

    def _window(
        self,
        first: int,
        last: int,
        joined: str,
        breaks: Sequence[int],
        single: bool,
        forms: Sequence[_Form],
        buckets: tuple[dict[int, list[_Form]] | None, ...],
    ) -> None:
        """Keep the forms the window of words ``first`` to ``last`` matches: exactly
        (``forms``), or one edit away (the forms of one length more, as many or one less
        in each one-edit ``bucket``)."""
        words = self.words
        soft = words.soft
        soft_edge = soft[first] or (last + 1 < len(soft) and soft[last + 1])
        tight = partial(words.tight, first, last)
        keep = partial(self._keep_if, first, last, breaks, single, soft_edge, tight)
        for form in forms:
            keep(form, None)
        size = len(joined)
        for bucket in buckets:
            if not bucket:
                continue
            for length in (size - 1, size, size + 1):
                for form in bucket.get(length, ()):
                    edit = _one_edit(joined, form.text)
                    if edit is not None:
                        keep(form, edit)

    def _keep_if(
        self,
        first: int,
        last: int,
        breaks: Sequence[int],
        single: bool,
        soft_edge: bool,
        tight: Callable[[], bool],
        form: _Form,
        edit: tuple[int, int] | None,
    ) -> None:
        """Keep ``form`` as found at words ``first`` to ``last`` if the rules allow it."""
        rule = _rule(form, breaks, single, soft_edge, self.index.coarse, edit, tight)
        if rule is not None:
            _keep(self.found, form.entry, self.words, first, last, rule)


def _keep(
    found: dict[_Entry, tuple[int, int, str]],
    entry: _Entry,
    words: Words,
    first: int,
    last: int,
    rule: str,
) -> None:
    start, end = words.span(first, last)
    known = found.get(entry)
    if known is None or start < known[0]:
        found[entry] = (start, end, rule)
