from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from typeahead.normalize import display_form, normalize


def test_case_accents_width_and_spaces() -> None:
    assert normalize("  Café   CRÈME ") == "cafe creme"
    assert normalize("ＡＢＣ") == "abc"
    assert normalize("Straße") == "strasse"
    assert normalize("a\tb\nc\x00d") == "a b c d"
    assert normalize("zero\u200bwidth") == "zerowidth"
    assert normalize("東京 タワー") == "東京 タワー"


def test_display_keeps_case_and_accents() -> None:
    assert display_form("  Café \t Crème ") == "Café Crème"


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_idempotent_and_never_raises(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once
    assert "  " not in once and once == once.strip()


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_display_then_normalize_equals_normalize(text: str) -> None:
    assert normalize(display_form(text)) == normalize(text)
