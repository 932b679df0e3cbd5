"""Search folding: what the DynamoDB store compares (PostgreSQL's unaccent folds the same letters)."""

import pytest

from healthcare.text import fold


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("Zoë Łukasik", "zoe lukasik"),
        ("JOSÉ Muñoz", "jose munoz"),
        ("Ørsted Straße", "orsted strasse"),
        ("Đorđe Ħal", "dorde hal"),
        ("ﬁnn", "finn"),  # compatibility ligature
        ("李小龍", "李小龍"),  # letters without accents stay as they are
    ],
)
def test_fold(text: str, folded: str) -> None:
    assert fold(text) == folded


def test_fold_is_idempotent() -> None:
    assert fold(fold("Ñandú Ångström")) == fold("Ñandú Ångström") == "nandu angstrom"
