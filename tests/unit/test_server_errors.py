"""The service's one error mapping: every class of the error tree maps to a
status, by the most specific mapped class in its MRO, whatever the table's order,
and is answered with its own code (the class's ``code``)."""

from __future__ import annotations

import random

import pytest

import consentry.errors as errors_module
from consentry.errors import ConsentryError, LogError, LogIntegrityError, RollbackError
from consentry.server.errors import ERROR_STATUS, http_status, map_consentry

CLASSES: list[type[ConsentryError]] = [
    getattr(errors_module, name)
    for name in errors_module.__all__
    if isinstance(getattr(errors_module, name), type)
    and issubclass(getattr(errors_module, name), ConsentryError)
]


def _instance(kind: type[ConsentryError]) -> ConsentryError:
    """An instance without calling a constructor that wants more arguments."""
    exc = kind.__new__(kind)
    Exception.__init__(exc, "boom")
    return exc


def _nearest(kind: type) -> int:
    """The MRO rule, stated independently: the entry of the first class in the
    MRO that the table holds."""
    mapped = [k for k in kind.__mro__ if k in ERROR_STATUS]
    assert mapped, f"{kind.__name__} has no mapped ancestor"
    return ERROR_STATUS[mapped[0]]


def test_every_exported_error_class_is_checked() -> None:
    assert len(CLASSES) == len(errors_module.__all__)  # __all__ holds only error classes
    assert ConsentryError in CLASSES and LogIntegrityError in CLASSES


@pytest.mark.parametrize("kind", CLASSES, ids=lambda k: k.__name__)
def test_each_class_maps_to_its_own_entry_or_nearest_mapped_ancestor(
    kind: type[ConsentryError],
) -> None:
    status, code = map_consentry(_instance(kind))
    assert 400 <= status <= 599 and code == kind.code
    if kind in ERROR_STATUS:
        assert status == ERROR_STATUS[kind]
    assert status == _nearest(kind) == http_status(kind)


@pytest.mark.parametrize("kind", CLASSES, ids=lambda k: k.__name__)
def test_a_subclass_outside_the_tree_gets_its_nearest_mapped_ancestor(
    kind: type[ConsentryError],
) -> None:
    child = type(f"Local{kind.__name__}", (kind,), {})
    assert map_consentry(_instance(child)) == map_consentry(_instance(kind))


def test_the_order_of_the_table_does_not_matter() -> None:
    items = list(ERROR_STATUS.items())
    expected = {k: map_consentry(_instance(k)) for k in CLASSES}
    rng = random.Random(13)
    for _ in range(20):
        rng.shuffle(items)
        shuffled = dict(items)
        for kind in CLASSES:
            assert map_consentry(_instance(kind), shuffled) == expected[kind]
    reversed_table = dict(reversed(list(ERROR_STATUS.items())))
    for kind in CLASSES:
        assert map_consentry(_instance(kind), reversed_table) == expected[kind]


def test_specific_entries_beat_their_bases() -> None:
    assert map_consentry(_instance(RollbackError)) == (503, "log_rolled_back")
    assert map_consentry(_instance(LogIntegrityError)) == (500, "log_error")
    assert map_consentry(_instance(LogError)) == (500, "log_error")


def test_an_entry_added_for_a_subclass_wins_over_its_base() -> None:
    # a table with an entry for LogIntegrityError: it wins, wherever it stands
    table = {LogIntegrityError: 409, **ERROR_STATUS}
    assert map_consentry(_instance(LogIntegrityError), table) == (409, "log_error")
    assert map_consentry(_instance(LogError), table) == (500, "log_error")
