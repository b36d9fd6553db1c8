"""Attacks on the prompt check: a registered name, however written, needs a grant.

Each attack class of issue 11 (class 3) is one test, parametrised over variants,
run through the real Gateway on a real registry: the prompt is refused for a
grantee without a grant (and for one holding a grant of another subject only),
and allowed, with the subject's grant used, for a grantee holding a generate
grant of that subject. A gate that refuses everything fails here too, and so
does one that allows everything. The variants here are not the ones in
tests/unit/test_aliases.py; bench/aliases.py tries a few thousand more.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from consentry import Registry
from consentry.faces.engines import get_engine
from consentry.gate import CheckRequest, Gateway, Receipt


@dataclass
class Gate:
    gateway: Gateway
    subjects: dict[str, str]  # short name -> subject id
    grants: dict[str, str]  # short name -> the licensed grantee's generate grant id

    def check(self, grantee: str, prompt: str) -> Receipt:
        return self.gateway.check(CheckRequest(grantee, "generate", [], prompt))

    def assert_gated(self, prompt: str, who: str) -> None:
        """Refused without a grant of ``who``; allowed with one, and that grant used."""
        refused = self.check("Studio", prompt)
        assert not refused.allowed, f"allowed without a grant: {prompt!r}"
        assert any("prompt" in r for r in refused.reasons), refused.reasons
        other = self.check("Other", prompt)
        assert not other.allowed, f"a grant of another subject let {prompt!r} through"
        allowed = self.check("Licensed", prompt)
        assert allowed.allowed, (prompt, allowed.reasons)
        assert self.grants[who] in allowed.grants, (prompt, allowed.grants)


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    home: Path = tmp_path_factory.mktemp("prompt-aliases")
    registry = Registry.init(home / "home", f"sqlite:///{home}/registry.db")
    subjects = {
        "quinn": registry.add_subject("Quinn Heldout").id,
        "obama": registry.add_subject("Barack Obama", ["Obama"]).id,
        "lmm": registry.add_subject("Lin-Manuel Miranda").id,
        "bob": registry.add_subject("Bob Example").id,
    }
    for grantee in ("Studio", "Licensed", "Other"):
        registry.add_grantee(grantee)
    grants = {
        who: registry.grant(subjects[who], "Licensed", ["generate"]).id
        for who in ("quinn", "obama", "lmm")
    }
    registry.grant(subjects["bob"], "Other", ["generate"])
    try:
        yield Gate(Gateway(registry, get_engine("sface")), subjects, grants)
    finally:
        registry.close()


@pytest.mark.attack("prompt alias: invisible code points inside a name")
@pytest.mark.parametrize(
    ("prompt", "who"),
    [
        ("a portrait of Qu\u034finn Heldout", "quinn"),  # combining grapheme joiner
        ("Quinn\ufe0f Held\ufe0fout, oil painting", "quinn"),  # variation selector
        ("Qui\u180bnn Hel\u180bdout", "quinn"),  # Mongolian free variation selector
        ("Quinn\u3164Heldout", "quinn"),  # Hangul filler
        ("O\u2060ba\u2063ma at dusk", "obama"),  # word joiner, invisible separator
        ("Ob\U000e0061ama\U000e007f", "obama"),  # tag characters
        ("Lin\u200d-Manuel Mir\u00adanda", "lmm"),  # ZWJ, soft hyphen
        ("O\u202eba\u202cma", "obama"),  # bidi override
        ("Ob\u17b4ama", "obama"),  # Khmer inherent vowel
        ("Qu\u2009inn Held\u200aout", "quinn"),  # thin and hair spaces
        ("a photo of\u200bObama\u200bsmiling", "obama"),  # invisible instead of spaces
        ("portrait\u2063obama\u2063at dusk", "obama"),
        ("a portrait of \u202etuodleH nniuQ\u202c at dusk", "quinn"),  # shown reversed
        ("\u2067amabO\u2069, oil painting", "obama"),  # right-to-left isolate
    ],
)
def test_invisible_code_points(gate: Gate, prompt: str, who: str) -> None:
    gate.assert_gated(prompt, who)


@pytest.mark.attack("prompt alias: Cyrillic, Greek and Latin look-alikes")
@pytest.mark.parametrize(
    ("prompt", "who"),
    [
        ("\u041ebama giving a speech", "obama"),  # Cyrillic O
        ("\u039f\u0392\u0391\u039c\u0391", "obama"),  # Greek capitals
        ("\u0185\u0430r\u0430\u0441k \u043e\u0432\u0430m\u0430", "obama"),  # Cyrillic mix
        ("Qu\u0456nn H\u0435\u04cfd\u03bfut", "quinn"),  # Cyrillic i, e, palochka; Greek o
        (
            "\U0001d410\U0001d42e\U0001d422\U0001d427\U0001d427 \U0001d407\U0001d41e\U0001d425"
            "\U0001d41d\U0001d428\U0001d42e\U0001d42d",
            "quinn",
        ),  # mathematical bold
        ("\uff2f\uff42\uff41\uff4d\uff41", "obama"),  # full-width
        ("\u24c4\u24d1\u24d0\u24dc\u24d0", "obama"),  # circled
        ("L\u00efn-M\u00e0n\u00fc\u00e9l M\u00efr\u00e0nd\u00e0", "lmm"),  # diacritics
        ("Lin-Manue\u0301l Mi\u0308randa", "lmm"),  # combining marks
        ("\u1d0f\u0299\u1d00\u1d0d\u1d00", "obama"),  # small capitals
        ("Qu\u0131nn H\u0435ld\u00f8ut", "quinn"),  # dotless i, o with stroke
    ],
)
def test_look_alikes(gate: Gate, prompt: str, who: str) -> None:
    gate.assert_gated(prompt, who)


@pytest.mark.attack("prompt alias: leetspeak")
@pytest.mark.parametrize(
    ("prompt", "who"),
    [
        ("Qu1nn H3ld0ut", "quinn"),
        ("QU!NN HE|D0UT at the beach", "quinn"),
        ("0b4ma", "obama"),
        ("Ob@m@, 4k", "obama"),
        ("L1n-M4nu3l M1r4nd4", "lmm"),
        ("Barack 0bama", "obama"),
        ("Qu1nn_H3ld0u7", "quinn"),
    ],
)
def test_leetspeak(gate: Gate, prompt: str, who: str) -> None:
    gate.assert_gated(prompt, who)


@pytest.mark.attack("prompt alias: non-letters between name parts")
@pytest.mark.parametrize(
    ("prompt", "who"),
    [
        ("Quinn_Heldout", "quinn"),
        ("Quinn/Heldout", "quinn"),
        ("Quinn+Heldout", "quinn"),
        ("Quinn:Heldout", "quinn"),
        ("Quinn, Heldout", "quinn"),
        ("Quinn \u2022 Heldout", "quinn"),
        ("Quinn\U0001f642Heldout", "quinn"),
        ("[Quinn](Heldout)", "quinn"),
        ("Quinn 44 Heldout", "quinn"),
        ("Lin~Manuel*Miranda", "lmm"),
        ("Quinn\n\nHeldout", "quinn"),
        ("Quinn\U0001f1fa\U0001f1f8Heldout", "quinn"),  # a flag
        ("Quinn \u00d7 Heldout", "quinn"),  # a symbol that looks like a letter
    ],
)
def test_non_letters_between_parts(gate: Gate, prompt: str, who: str) -> None:
    gate.assert_gated(prompt, who)


@pytest.mark.attack("prompt alias: run-together and camelCase")
@pytest.mark.parametrize(
    ("prompt", "who"),
    [
        ("QuinnHeldout", "quinn"),
        ("quinnheldout as a knight", "quinn"),
        ("QUINNHELDOUT", "quinn"),
        ("#BarackObama", "obama"),
        ("LinManuelMiranda", "lmm"),
        ("a BarackObamaStyle portrait", "obama"),
    ],
)
def test_run_together(gate: Gate, prompt: str, who: str) -> None:
    gate.assert_gated(prompt, who)


@pytest.mark.attack("prompt alias: reversed order and Surname, Given")
@pytest.mark.parametrize(
    ("prompt", "who"),
    [
        ("Heldout Quinn", "quinn"),
        ("Heldout, Quinn", "quinn"),
        ("HELDOUT, Quinn", "quinn"),
        ("Miranda, Lin-Manuel", "lmm"),
        ("Miranda Manuel Lin", "lmm"),
        ("Manuel Miranda Lin", "lmm"),
        ("heldout,quinn in a garden", "quinn"),
    ],
)
def test_reversed_order(gate: Gate, prompt: str, who: str) -> None:
    gate.assert_gated(prompt, who)


@pytest.mark.attack("prompt alias: hyphens inside a name part")
@pytest.mark.parametrize(
    ("prompt", "who"),
    [
        ("Quinn Hel-dout", "quinn"),
        ("Qu-inn Held-out", "quinn"),
        ("Barack Ob-ama", "obama"),
        ("Ob-ama at a podium", "obama"),
        ("O.ba_ma", "obama"),
        ("Lin-Ma-nuel Mir-anda", "lmm"),
        ("Quinn Hel\u2011dout", "quinn"),  # non-breaking hyphen
        ("Quinn Held\u2013out", "quinn"),  # en dash
        ("Quinn Hel.dout", "quinn"),
    ],
)
def test_hyphens_inside_a_part(gate: Gate, prompt: str, who: str) -> None:
    gate.assert_gated(prompt, who)


@pytest.mark.attack("prompt alias: spaced letters")
@pytest.mark.parametrize(
    ("prompt", "who"),
    [
        ("Q u i n n   H e l d o u t", "quinn"),
        ("Q.U.I.N.N. H.E.L.D.O.U.T.", "quinn"),
        ("O b a m a", "obama"),
        ("O-B-A-M-A", "obama"),
        ("B a r a c k O b a m a", "obama"),
        ("q_u_i_n_n_h_e_l_d_o_u_t", "quinn"),
    ],
)
def test_spaced_letters(gate: Gate, prompt: str, who: str) -> None:
    gate.assert_gated(prompt, who)


@pytest.mark.attack("prompt alias: one-letter misspelling of a long name")
@pytest.mark.parametrize(
    ("prompt", "who"),
    [
        ("Quinn Heldotu", "quinn"),  # neighbours swapped
        ("Quinn Helduot", "quinn"),
        ("Quin Heldout", "quinn"),  # a letter dropped
        ("Quinn Heldoutt", "quinn"),  # a letter added
        ("Qiunn Heldout", "quinn"),
        ("Quinn Heldaut", "quinn"),  # a letter replaced
        ("Lin-Manuel Mirandq", "lmm"),
        ("Barack Obamma", "obama"),
        ("Lin-Manuel Mirada", "lmm"),
        ("Lin-Manual Miranda", "lmm"),
    ],
)
def test_one_letter_misspelling(gate: Gate, prompt: str, who: str) -> None:
    gate.assert_gated(prompt, who)


def test_ordinary_prompts_are_allowed(gate: Gate) -> None:
    """A sample of the ordinary corpus of bench/aliases.py, checked by the real gate."""
    from bench.aliases_data import ordinary_prompts

    corpus = ordinary_prompts(3000)[::30]  # 100 prompts, every kind of template
    refused = [p for p in corpus if not gate.check("Studio", p).allowed]
    assert refused == []
