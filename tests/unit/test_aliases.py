"""AliasMatcher: whole words, case and accents folded, multi-word names, scale."""

from __future__ import annotations

import pytest

from consentry.generation.aliases import AliasMatcher, fold, tokenize


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
    ["Adams", "canada", "Adaline", "nevada skyline", "ada_lovelace", "ada2", "adà̀x"],
)
def test_no_substring_false_positives(matcher: AliasMatcher, prompt: str) -> None:
    assert "sub_ada" not in ids(matcher, prompt)


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
    assert fold("Straße") == fold("STRASSE")
    assert fold("İstanbul") == "istanbul"


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


def test_multi_word_not_across_other_punctuation(matcher: AliasMatcher) -> None:
    found = matcher.find("Ada, Lovelace")
    assert ("sub_ada", "Ada Lovelace") not in found
    assert ("sub_ada", "Ada") in found  # the single word still counts


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


def test_tokenize_gaps() -> None:
    assert tokenize("Ada,  Lovelace!") == (("ada", "lovelace"), ("", ","))


def test_five_thousand_aliases() -> None:
    subjects = [(f"sub_{i}", [f"Person{i} Surname{i}", f"Nick{i}"]) for i in range(2500)]
    m = AliasMatcher(subjects)
    assert len(m) == 5000
    prompt = " ".join(f"word{i}" for i in range(2000)) + " then nick1234 and PERSON42  surname42."
    assert m.find(prompt) == [("sub_1234", "Nick1234"), ("sub_42", "Person42 Surname42")]
    for i in range(200):
        m.find(f"a painting of person{i} surname{i} beside nick{i + 1}")
    assert m.find("person42 surname43") == []
