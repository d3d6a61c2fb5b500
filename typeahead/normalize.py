"""Query normalisation: the one definition of "the same text" for matching.

Matching keys are NFKC-normalised, case-folded, accent-free, control-free and have single
spaces. The display form keeps the user's casing and accents. The ASCII fast path matters:
this runs on every keystroke and must cost well under a microsecond for typical input.
"""

from __future__ import annotations

import unicodedata

_ASCII_CONTROLS = {i: " " for i in range(32)} | {127: " "}


def normalize(text: str) -> str:
    """Return the matching key for ``text``; idempotent: normalize(normalize(x)) == normalize(x)."""
    if text.isascii():
        if not text.isprintable():
            text = text.translate(_ASCII_CONTROLS)
        return " ".join(text.lower().split())
    return _normalize_unicode(text)


def _normalize_unicode(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    # Decompose, drop combining marks (accents), recompose; then casefold again because
    # recomposition can produce characters whose fold differs (e.g. from NFKC compatibility forms).
    decomposed = unicodedata.normalize("NFD", text)
    stripped = "".join(c for c in decomposed if not _drop(c))
    out = unicodedata.normalize("NFKC", stripped).casefold()
    if out != stripped:
        out = "".join(c for c in unicodedata.normalize("NFD", out) if not _drop(c))
        out = unicodedata.normalize("NFC", out)
    return " ".join(_spaces(out).split())


def _drop(ch: str) -> bool:
    cat = unicodedata.category(ch)
    # Mn: combining accents. Cf/Cs/Co/Cn: format, surrogate, private and unassigned code
    # points, invisible, would make two identical-looking queries differ. Controls (Cc) are
    # kept here and become spaces below, as on the ASCII path.
    return cat == "Mn" or cat in _INVISIBLE


_INVISIBLE = {"Cf", "Cs", "Co", "Cn"}


def _spaces(text: str) -> str:
    return "".join(" " if (c.isspace() or unicodedata.category(c) in ("Zs", "Cc")) else c
                   for c in text)


def display_form(text: str) -> str:
    """The text as shown to users: original casing and accents, whitespace collapsed."""
    text = unicodedata.normalize("NFC", text)
    return " ".join("".join(_display_char(c) for c in text).split())


def _display_char(ch: str) -> str:
    cat = unicodedata.category(ch)
    if cat == "Cc":
        return " "
    # Format characters stay (emoji joiners); unassigned/private/surrogates carry nothing.
    return "" if cat in ("Cs", "Co", "Cn") else ch


# ``fold_punctuation``: for corpora of titles and names, where "Sorcerer's", "J.K." and
# "Spider-Man" are typed "sorcerers", "jk" and "spider man". Char by char, so that spans on a
# folded key map back to the display text (typeahead.suggest.lexical.map_spans).
_FOLD = str.maketrans({"'": "", "\u2019": "", "`": "", ".": "", "-": " ", "\u2010": " ",
                       "\u2013": " "})


def fold_punctuation(key: str) -> str:
    """A normalised key with apostrophes and dots dropped and hyphens made spaces."""
    return " ".join(key.translate(_FOLD).split())


def fold_char(piece: str) -> str:
    """``fold_punctuation`` of one character's normalised form, spaces kept."""
    return piece.translate(_FOLD)
