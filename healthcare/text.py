"""Text folding for search: a name and a query compare equal ignoring case and accents."""

from __future__ import annotations

import unicodedata

# Latin letters that carry no combining mark in Unicode, so NFKD leaves them whole; PostgreSQL's
# `unaccent` maps them to these (the two stores fold alike).
_LETTERS = str.maketrans(
    {"\u00f8": "o", "\u00d8": "O", "\u0142": "l", "\u0141": "L", "\u0111": "d", "\u0110": "D"}
    | {"\u0131": "i", "\u0127": "h", "\u0126": "H"}  # o, l, d, h with stroke; dotless i
)


def fold(text: str) -> str:
    """`Zoë Łukasik` -> `zoe lukasik`: compatibility-decompose, drop combining marks, case-fold."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_LETTERS))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
