"""AliasMatcher: whole words, skeletons (case, accents, invisibles, look-alikes, leetspeak),
multi-word names in any order and spacing, one edit for long names, short-name limits, scale."""

from __future__ import annotations

import pytest

from consentry.gate.aliases import (
    MIN_COARSE,
    MIN_EDIT,
    MIN_LOOSE,
    MIN_SPACED,
    AliasMatcher,
    skeleton,
)


@pytest.fixture(scope="module")
def matcher() -> AliasMatcher:
    return AliasMatcher(
        [
            ("sub_ada", ["Ada", "Ada Lovelace", "Countess of Lovelace"]),
            ("sub_zoe", ["Zoë"]),
            ("sub_jose", ["José Martí"]),
            ("sub_jl", ["Jean-Luc Picard"]),
            ("sub_jrr", ["J. R. R. Tolkien"]),
            ("sub_ob", ["O'Brien"]),
            ("sub_jp", ["山田太郎"]),
            ("sub_empty", ["", "   ", "!!!"]),
        ]
    )


def ids(matcher: AliasMatcher, prompt: str) -> set[str]:
    return {subject for subject, _ in matcher.find(prompt)}


@pytest.mark.parametrize(
    "prompt",
    [
        "Ada",
        "ada's portrait",
        "ADA, in oil",
        "a portrait of ada.",
        "(Ada)",
        "«Ada»",
        "photo:ada",
        "ada\n",
    ],
)
def test_whole_word_matches(matcher: AliasMatcher, prompt: str) -> None:
    assert "sub_ada" in ids(matcher, prompt)


@pytest.mark.parametrize(
    "prompt",
    ["Adams", "canada", "Adaline", "nevada skyline", "adà̀x", "a da", "A-da", "ad a"],
)
def test_no_substring_false_positives(matcher: AliasMatcher, prompt: str) -> None:
    # "Ada" has 3 letters: below MIN_LOOSE and MIN_SPACED, so only whole words count
    assert "sub_ada" not in ids(matcher, prompt)


def test_digits_and_underscores_separate_words(matcher: AliasMatcher) -> None:
    # Changed with issue 11: "_" and digits are no longer word characters, so a name
    # followed by a digit or joined by "_" is named.
    assert ("sub_ada", "Ada") in matcher.find("ada2")
    assert ("sub_ada", "Ada Lovelace") in matcher.find("ada_lovelace")


def test_returns_registered_alias_once_in_prompt_order(matcher: AliasMatcher) -> None:
    found = matcher.find("zoe, then ADA, then Zoë again, then ada")
    assert found == [("sub_zoe", "Zoë"), ("sub_ada", "Ada")]


@pytest.mark.parametrize(
    ("prompt", "subject"),
    [
        ("zoe at the beach", "sub_zoe"),
        ("ZOË", "sub_zoe"),
        ("Zoe\u0308", "sub_zoe"),  # decomposed diaeresis
        ("JOSE MARTI", "sub_jose"),
        ("josé martí", "sub_jose"),
        ("Jose Marti", "sub_jose"),
        (
            "\uff4a\uff4f\uff53\u00e9\u3000\uff4d\uff41\uff52\uff54\u00ed",
            "sub_jose",
        ),  # fullwidth letters, ideographic space
    ],
)
def test_accents_and_case_are_folded(matcher: AliasMatcher, prompt: str, subject: str) -> None:
    assert subject in ids(matcher, prompt)


def test_fold_is_symmetric() -> None:
    # An accented prompt matches a plain alias as well as the other way round.
    plain = AliasMatcher([("sub_j", ["JOSE"]), ("sub_z", ["zoe"])])
    assert ids(plain, "José and Zoë") == {"sub_j", "sub_z"}
    assert skeleton("Straße") == skeleton("STRASSE")
    assert skeleton("İstanbul") == "istanbul"


@pytest.mark.parametrize(
    "prompt",
    [
        "Ada Lovelace",
        "ada   lovelace",
        "ada\n\tlovelace",
        "ada\u00a0lovelace",  # no-break space
        "the countess   of\nlovelace",
    ],
)
def test_multi_word_any_whitespace(matcher: AliasMatcher, prompt: str) -> None:
    found = matcher.find(prompt)
    assert any(alias in ("Ada Lovelace", "Countess of Lovelace") for _, alias in found)


def test_multi_word_needs_every_word(matcher: AliasMatcher) -> None:
    assert ids(matcher, "the countess of monte cristo") == set()
    assert ids(matcher, "Lovelace") == set()
    assert ids(matcher, "Jean-Luc") == set()


def test_multi_word_across_any_separator(matcher: AliasMatcher) -> None:
    # Changed with issue 11: any non-letter between the parts of a name still names it.
    for prompt in (
        "Ada, Lovelace",
        "ada_lovelace",
        "Ada/Lovelace",
        "ada • lovelace",
        "ada🙂lovelace",
    ):
        found = matcher.find(prompt)
        assert ("sub_ada", "Ada Lovelace") in found, prompt
        assert ("sub_ada", "Ada") in found


@pytest.mark.parametrize(
    ("prompt", "subject"),
    [
        ("jean-luc picard", "sub_jl"),
        ("Jean Luc Picard", "sub_jl"),
        ("jean\u2013luc picard", "sub_jl"),  # en dash
        ("J.R.R. Tolkien", "sub_jrr"),
        ("j r r tolkien", "sub_jrr"),
        ("o'brien", "sub_ob"),
        ("O\u2019Brien", "sub_ob"),  # typographic apostrophe
        ("O Brien", "sub_ob"),
    ],
)
def test_name_punctuation(matcher: AliasMatcher, prompt: str, subject: str) -> None:
    assert subject in ids(matcher, prompt)


def test_overlapping_aliases_all_found() -> None:
    m = AliasMatcher([("sub_a", ["Ada"]), ("sub_b", ["Ada Lovelace"]), ("sub_c", ["Lovelace"])])
    assert ids(m, "ada lovelace") == {"sub_a", "sub_b", "sub_c"}


def test_shared_alias_names_both_subjects() -> None:
    m = AliasMatcher([("sub_1", ["Sam"]), ("sub_2", ["sam"])])
    assert m.find("SAM") == [("sub_1", "Sam"), ("sub_2", "sam")]
    assert m.subjects_in("sam and sam") == ("sub_1", "sub_2")


def test_zero_width_characters_do_not_hide_a_name(matcher: AliasMatcher) -> None:
    assert "sub_ada" in ids(matcher, "A\u200bda")
    assert "sub_ada" in ids(matcher, "A\u00adda")  # soft hyphen


def test_spaceless_scripts(matcher: AliasMatcher) -> None:
    assert "sub_jp" in ids(matcher, "山田太郎の写真")
    assert "sub_jp" in ids(matcher, "山田・太郎")
    assert "sub_jp" not in ids(matcher, "山田の写真")


def test_aliases_without_words_are_dropped(matcher: AliasMatcher) -> None:
    assert "sub_empty" not in ids(matcher, "!!! and nothing")
    assert matcher.find("") == []
    assert AliasMatcher([]).find("anything") == []


def test_a_bare_string_of_names_is_one_name() -> None:
    assert AliasMatcher([("sub_x", "Bea")]).find("bea") == [("sub_x", "Bea")]


def test_skeleton_words() -> None:
    assert skeleton("Ada,  Lovelace!") == "ada lovelace"
    assert skeleton("Q\u200bu\u034fi\ufe0fn\u180bn\u3164") == "quinn"
    assert skeleton("\u041e\u0432\u0430\u043c\u0430") == "obama"  # Cyrillic look-alikes
    assert skeleton("\U0001d410\uff55\u24d8nn") == "quinn"  # math bold, full-width, circled
    assert skeleton("QuinnHeldout") == "quinn heldout"  # camelCase is a (soft) break
    assert skeleton("Qu1nn 4 ever") == "qu nn ever"  # digits separate in the plain view


def test_five_thousand_aliases() -> None:
    subjects = [(f"sub_{i}", [f"Person{i} Surname{i}", f"Nick{i}"]) for i in range(2500)]
    m = AliasMatcher(subjects)
    assert len(m) == 5000
    prompt = " ".join(f"word{i}" for i in range(2000)) + " then nick1234 and PERSON42  surname42."
    assert m.find(prompt) == [("sub_1234", "Nick1234"), ("sub_42", "Person42 Surname42")]
    for i in range(200):
        m.find(f"a painting of person{i} surname{i} beside nick{i + 1}")
    assert m.find("person42 surname43") == []


# -- issue 11: the classes of writing a name that must still name it ---------------------

QUINN = AliasMatcher([("sub_q", ["Quinn Heldout"]), ("sub_o", ["Barack Obama", "Obama"])])


def named(prompt: str, subject: str = "sub_q", matcher: AliasMatcher = QUINN) -> bool:
    return subject in ids(matcher, prompt)


def _dicp() -> list[str]:
    """Every Default_Ignorable_Code_Point that is assigned (by the regex module's data)."""
    regex = pytest.importorskip("regex")
    pattern = regex.compile(r"\p{Default_Ignorable_Code_Point}")
    return [chr(c) for c in range(0x110000) if pattern.match(chr(c))]


def test_every_default_ignorable_code_point_is_dropped() -> None:
    points = _dicp()
    assert len(points) > 4000
    for ch in points:
        assert skeleton(f"Qu{ch}inn") == "quinn", hex(ord(ch))
    assert named("Qu\u034finn\u3164 He\U000e0041ld\u180bout\ufe0f")


@pytest.mark.parametrize(
    "ch",
    [
        "\u0000",
        "\u0007",
        "\u001b",
        "\u007f",
        "\u0097",
        "\u200b",
        "\u2062",
        "\u0600",
        "\U000110bd",
        "\u2009",
        "\u202f",
        "\u2800",
    ],
)
def test_other_invisible_characters_are_dropped(ch: str) -> None:
    assert named(f"Qui{ch}nn Hel{ch}dout")
    assert named(f"Ob{ch}ama", "sub_o")
    # used instead of spaces, they still end a word
    assert named(f"a photo of{ch}Obama{ch}smiling", "sub_o")
    assert named(f"of{ch}obama{ch}2", "sub_o")


@pytest.mark.parametrize(
    "prompt",
    [
        "Q\u057d\u0456\u0578\u0578 \u041d\u0435\u04cf\u0501\u0585\u057dt",  # Cyrillic, Armenian
        "Qu\u0456nn \u041de\u04cfd\u03bfut",
        "\u051b\u03c5\u03b9nn H\u0435ldout",  # Greek upsilon, iota; Cyrillic qa
        "\U0001d5e4\U0001d602\U0001d5f6\U0001d5fb\U0001d5fb \U0001d5db\U0001d5f2\U0001d5f9"
        "\U0001d5f1\U0001d5fc\U0001d602\U0001d601",  # mathematical sans-serif bold
        "\uff31\uff55\uff49\uff4e\uff4e\u3000\uff28\uff45\uff4c\uff44\uff4f\uff55\uff54",
        "Qu\u00ecnn H\u00e9ld\u00f6\u00fct",  # precomposed accents
        "Qu\u0131nn H\u0337eld\u00f8ut",  # dotless i, overlay, o with stroke
        "\u24c6\u24e4\u24d8\u24dd\u24dd \u24bd\u24d4\u24db\u24d3\u24de\u24e4\u24e3",  # circled
        "Q\u1d1c\u026ann \u029c\u1d07\u029f\u1d05\u1d0f\u1d1c\u1d1b",  # small capitals
    ],
)
def test_look_alikes(prompt: str) -> None:
    assert named(prompt)


def test_look_alikes_of_a_short_alias() -> None:
    for prompt in ("\u041ebama", "\u039f\u0392\u0391\u039c\u0391", "Ob\u0430m\u0430", "0bama"):
        assert named(prompt, "sub_o"), prompt


@pytest.mark.parametrize(
    "prompt", ["Qu1nn H3ld0ut", "QU!NN HE|DOUT", "Qu!nn He1d0u7", "9uinn h3ld0u+", "Qu1nn_H3ld0ut"]
)
def test_leetspeak(prompt: str) -> None:
    assert named(prompt)


@pytest.mark.parametrize(
    "sep",
    [
        "_",
        "/",
        "+",
        ":",
        ",",
        "•",
        "🙂",
        "][",
        ")(",
        "7",
        "42",
        "\n",
        " :: ",
        "\u2014",
        "|",
        "*",
        "&",
    ],
)
def test_any_non_letter_between_parts(sep: str) -> None:
    assert named(f"a portrait of Quinn{sep}Heldout at dusk")
    assert named(f"[Quinn]{sep}[Heldout]")


@pytest.mark.parametrize(
    "prompt",
    [
        "QuinnHeldout",
        "quinnheldout",
        "QUINNHELDOUT",
        "quinnHeldout",
        "#QuinnHeldout",
        "QuinnHeldoutPortrait",
        "myQuinnHeldout",
    ],
)
def test_run_together_and_camel_case(prompt: str) -> None:
    assert named(prompt)


@pytest.mark.parametrize(
    "prompt", ["Heldout Quinn", "Heldout, Quinn", "HELDOUT,QUINN", "heldout; quinn", "HeldoutQuinn"]
)
def test_reversed_order(prompt: str) -> None:
    assert named(prompt)


@pytest.mark.parametrize(
    "prompt",
    [
        "Hel-dout Quinn",
        "Qu-inn Held-out",
        "Quinn Hel\u2010d\u2013out",
        "Qu.inn Hel_dout",
        "Quinn Held\u00b7out",
        "Qu inn Hel dout",
    ],
)
def test_separators_inside_a_part(prompt: str) -> None:
    assert named(prompt)


@pytest.mark.parametrize(
    "prompt",
    [
        "Q u i n n   H e l d o u t",
        "Q.u.i.n.n H.e.l.d.o.u.t",
        "q-u-i-n-n-h-e-l-d-o-u-t",
        "Q u i n n H e l d o u t",
        "H e l d o u t Q u i n n",
        "Q_U_I_N_N / H_E_L_D_O_U_T",
    ],
)
def test_spaced_letters(prompt: str) -> None:
    assert named(prompt)
    assert named(
        prompt.replace("Q u i n n", "O b a m a").replace("Q.u.i.n.n", "O.b.a.m.a")
        if "Q u i n n" in prompt or "Q.u.i.n.n" in prompt
        else "O b a m a",
        "sub_o",
    )


@pytest.mark.parametrize(
    "prompt",
    [
        "Quinn Heldot",
        "Quinn Heldoutt",
        "Qiunn Heldout",
        "Quinn Heldaut",
        "Quin Heldout",
        "Quinn Hledout",
        "QuinnHeldotu",
        "Heldout Quinm",
        "Quinn X Heldout",
        "Qu1nn Heldot",
    ],
)
def test_one_edit_in_a_long_name(prompt: str) -> None:
    assert named(prompt)


# -- the limits that keep ordinary prompts allowed ----------------------------------------

SHORT = AliasMatcher(
    [
        ("sub_al", ["al"]),
        ("sub_ob", ["Obama"]),
        ("sub_don", ["Donald"]),
        ("sub_ian", ["Ian"]),
        ("sub_sam", ["Sam Lee"]),
        ("sub_bea", ["Bea"]),
    ]
)


@pytest.mark.parametrize(
    "prompt",
    [
        "AI art of a cat",  # l/i look-alike only counts for MIN_COARSE letters
        "A1 steak sauce",  # leetspeak only for MIN_COARSE letters
        "a lot of cats",
        "obamacare chart",
        "ObamaCare chart",  # a soft edge needs a multi-part alias
        "a McDonald's sign",
        "obamas",  # one edit needs MIN_EDIT letters
        "osama",
        "a b e a",
        "i a n",  # spaced letters need MIN_SPACED letters
        "is a mlee",
        "salee",
        "sam-lee's",
    ],
)
def test_short_names_do_not_match_ordinary_words(prompt: str) -> None:
    found = ids(SHORT, prompt)
    assert found <= ({"sub_sam"} if "sam-lee" in prompt else set()), (prompt, found)


def test_short_names_still_match_as_written() -> None:
    assert ids(SHORT, "al's bike, obama, Donald, ian and SAM LEE; bea.") == {
        "sub_al",
        "sub_ob",
        "sub_don",
        "sub_ian",
        "sub_sam",
        "sub_bea",
    }
    assert ids(SHORT, "samlee") == {"sub_sam"}  # 6 letters: run-together allowed
    assert ids(SHORT, "O b a m a") == {"sub_ob"}


def test_a_short_name_split_without_spaces() -> None:
    # MIN_SPACED letters are enough where no space is among the separators ...
    for prompt in ("Ob-ama", "O.bama", "Ob_am_a", "Ob\u2013ama"):
        assert ids(SHORT, prompt) == {"sub_ob"}, prompt
    # ... but words of ordinary text that spell a short name are no match
    assert ids(SHORT, "an ob ama sign") == set()
    assert ids(SHORT, "B-ea") == set()  # 3 letters: never split


def test_thresholds_are_ordered() -> None:
    assert 3 <= MIN_SPACED <= MIN_COARSE <= MIN_LOOSE <= MIN_EDIT


def test_aliases_with_digits_keep_them() -> None:
    m = AliasMatcher([("sub_r", ["R2-D2"]), ("sub_n", ["Nick1234"])])
    assert ids(m, "an R2-D2 toy") == {"sub_r"}
    assert ids(m, "r2 d2") == {"sub_r"}
    assert ids(m, "r3-d3") == set()
    assert ids(m, "nick 1234") == {"sub_n"}
    assert ids(m, "nick12345") == set()


def test_symbols_that_read_as_letters() -> None:
    # a flag or a letter-like symbol between parts separates them ...
    assert named("Quinn\U0001f1fa\U0001f1f8Heldout")
    assert named("Quinn\u2713Heldout")
    # ... and a name spelled in them is still read (in the coarse view)
    assert named("\U0001f17e\U0001f171\U0001f170\U0001f17c\U0001f170", "sub_o")
    assert named("\U0001f1f4\U0001f1e7\U0001f1e6\U0001f1f2\U0001f1e6", "sub_o")


def test_right_to_left_overrides_are_read_as_displayed() -> None:
    prompt = "a portrait of \u202etuodleH nniuQ\u202c at dusk"
    (match,) = QUINN.explain(prompt)
    assert match.subject_id == "sub_q"
    assert prompt[match.start : match.end] == "tuodleH nniuQ"
    assert named("\u2067amabO\u2069", "sub_o")
    assert not named("tuodleH nniuQ")  # stored reversed without a control: not shown as a name


def test_explain_gives_the_span_in_the_prompt() -> None:
    prompt = "a portrait of Qu\u200binn_H3ld0ut at dusk"
    (match,) = QUINN.explain(prompt)
    assert prompt[match.start : match.end] == "Qu\u200binn_H3ld0ut"
    assert match.subject_id == "sub_q" and "coarse" in match.rule


def test_ordinary_corpus_is_allowed_against_realistic_names() -> None:
    bench = pytest.importorskip("bench.aliases_data")
    m = AliasMatcher(bench.registered())
    refused = [p for p in bench.ordinary_prompts(1500) if m.find(p)]
    # The only refusals: the Spanish word "al" (a registered alias, refused before issue 11
    # too) and "Bernadotte", one edit from the registered alias "Bernadette".
    assert all(" al " in f" {p} " or "bernadotte" in p.lower() for p in refused), refused[:5]
    assert len(refused) / 1500 < 0.02


def test_every_tr39_look_alike_of_a_latin_letter() -> None:
    """Each code point whose TR39 prototype is one Latin letter, put in place of that
    letter in a name of MIN_COARSE letters or more, still names the subject."""
    from consentry.gate.skeleton import fold, prototypes

    tried = 0
    for ch, prototype in prototypes().items():
        shape = fold(prototype)
        if len(shape) != 1 or not ("a" <= shape <= "z"):
            continue
        for name, subject in (("Quinn Heldout", "sub_q"), ("Obama", "sub_o")):
            at = next((i for i, c in enumerate(name) if c.lower() == shape), None)
            if at is None and shape == "l":
                at = name.find("I")
            if at is None or at < 0:
                continue
            tried += 1
            prompt = f"a portrait of {name[:at]}{ch}{name[at + 1 :]} at dusk"
            assert named(prompt, subject), (hex(ord(ch)), prompt)
    assert tried > 900
