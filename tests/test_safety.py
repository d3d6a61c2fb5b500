"""Suggestion safety: the policy's categories, look-alikes and obfuscations, the adult setting,
the build report, and what the keystroke answer does with explicit input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lexical_fixtures import build_small_index, write_tsv
from tests.student_fixtures import tiny_student
from typeahead.errors import ConfigError
from typeahead.safety.policy import ADULT_CATEGORIES, CATEGORIES, SuggestionPolicy
from typeahead.settings import Settings
from typeahead.suggest.semantic import SemanticLayer
from typeahead.suggest.service import SuggestService

POLICY = SuggestionPolicy.load()
ADULT = SuggestionPolicy.load(sorted(ADULT_CATEGORIES))

EXAMPLES = [
    # one or more per category, as they appear in the served AOL dictionary
    ("naked teens", "minors"),
    ("naked girls", "minors"),
    ("teen sex", "minors"),
    ("child porn", "minors"),
    ("sexzool", "bestiality"),
    ("horse sex", "bestiality"),
    ("dog porn", "bestiality"),
    ("rape porn", "sexual_violence"),
    ("forced sex videos", "sexual_violence"),
    ("nigger", "slurs"),
    ("kike", "slurs"),
    ("john.doe@gmail.com", "personal_data"),
    ("call 212-555-0187", "personal_data"),
    ("4111 1111 1111 1111", "personal_data"),
    ("123-45-6789", "personal_data"),
    ("sex toys", "sexual"),
    ("free porn", "sexual"),
    ("big dicks", "sexual"),
    ("anal sex", "sexual"),
    ("fuck", "profanity"),
    ("shit", "profanity"),
]
LOOK_ALIKES = [
    "dicks sporting goods", "naked mole rats", "breast cancer", "sex offender registry",
    "sussex", "emily dickinson", "cocktail dress", "pussycat dolls", "bass pro shops",
    "hancock fabrics", "scunthorpe united", "middlesex county", "cumberland farms", "hot tubs",
    "shitake mushrooms", "assassins creed", "classic cars", "analysis of variance", "grape",
    "sextant", "1-800-flowers", "pier 57", "area code 212", "the 1990s", "essex", "therapist",
]
OBFUSCATIONS = [
    ("pr0n", "sexual"), ("s3x", "sexual"), ("s e x", "sexual"), ("p.o.r.n", "sexual"),
    ("fuuuck", "profanity"), ("f*ck", "profanity"), ("freeporn", "sexual"),
    ("sexzool", "bestiality"), ("P0RN", "sexual"), ("S-E-X toys", "sexual"),
]
NEVER_ALLOWED = ("minors", "bestiality", "sexual_violence", "slurs", "personal_data")
# Generalisations beyond single words: addresses whose "@" was lost, picture and gallery words,
# glued site names, digits as written, "%20" for a space, Spanish, names of sites.
PATTERNS = [
    ("jrtoots yahoo.com", "personal_data"), ("www.egchen37 yahoo.com", "personal_data"),
    ("dgilber6 tampabay.rr.com", "personal_data"), ("www.jhenderson.gmail.com", "personal_data"),
    ("fred.brazzale abnamro.com", "personal_data"), ("teen pics", "minors"),
    ("young girls galleries", "minors"), ("teenies", "minors"), ("barely 19 gallery", "minors"),
    ("sexy pics", "sexual"), ("hairy gallery", "sexual"), ("bigbooty.com", "sexual"),
    ("sexyvixens.net", "sexual"), ("orangecountytranssexuals.com", "sexual"),
    ("adam4adam", "sexual"), ("orlandom4m", "sexual"), ("busty 20ladies", "sexual"),
    ("putas", "sexual"), ("nalgas calientes", "sexual"), ("vesinas cachondas", "sexual"),
    ("www.thehun.com", "sexual"), ("galleries.ztod.com", "sexual"), ("beastforum", "bestiality"),
    ("zoo movies", "bestiality"), ("crazyshit", "profanity"),
]
PATTERN_LOOK_ALIKES = [
    "mail yahoo.com", "groups.yahoo.com", "www yahoo.com", "st.louis cardinals.com",
    "backstreet boys pictures", "photos of little boy haircut", "kids photos", "bikini pictures",
    "hot rod pictures", "pictures of babe ruth", "transsexuals", "vaginal", "cocker spaniel",
    "nikon8008", "188wheelchairs", "ejercicios para las nalgas", "cleveland rappers",
    "free candy samples for small businesses", "attila the hun", "guitar fingering chart",
    "lightspeed systems", "pre teen sunday school lessons", "zoo tycoon", "san diego zoo",
    "matsushita", "shitzu puppies", "superoxide dismutase", "sex harassment cases",
]


@pytest.mark.parametrize(("text", "category"), EXAMPLES)
def test_each_category_is_blocked(text: str, category: str) -> None:
    assert POLICY.blocked(text) == category
    assert category in POLICY.categories(text)


@pytest.mark.parametrize("text", LOOK_ALIKES)
def test_look_alikes_stay(text: str) -> None:
    assert POLICY.blocked(text) is None, POLICY.categories(text)


@pytest.mark.parametrize(("text", "category"), OBFUSCATIONS)
def test_obfuscations_are_caught(text: str, category: str) -> None:
    assert POLICY.blocked(text) == category


@pytest.mark.parametrize(("text", "category"), PATTERNS)
def test_patterns_beyond_single_words_are_caught(text: str, category: str) -> None:
    assert POLICY.blocked(text) == category


@pytest.mark.parametrize("text", PATTERN_LOOK_ALIKES)
def test_pattern_look_alikes_stay(text: str) -> None:
    assert POLICY.blocked(text) is None, POLICY.categories(text)


@pytest.mark.parametrize(("text", "category"), EXAMPLES + OBFUSCATIONS + PATTERNS)
def test_the_adult_setting_never_loosens_the_severe_categories(text: str, category: str) -> None:
    if category in NEVER_ALLOWED:
        assert ADULT.blocked(text) == category
    else:
        assert ADULT.blocked(text) is None


def test_the_most_severe_category_decides() -> None:
    text = "teen sex fuck"
    assert set(POLICY.categories(text)) >= {"minors", "sexual", "profanity"}
    assert POLICY.blocked(text) == "minors"
    assert CATEGORIES.index("minors") < CATEGORIES.index("sexual")


def test_only_adult_categories_may_be_allowed() -> None:
    for category in NEVER_ALLOWED:
        with pytest.raises(ConfigError, match=category):
            SuggestionPolicy.load([category])
        with pytest.raises(ConfigError, match="safety_allow"):
            Settings.from_env({"TYPEAHEAD_SAFETY_ALLOW": f"sexual,{category}"})
    with pytest.raises(ConfigError, match="nudity"):
        SuggestionPolicy.load(["nudity"])


def test_policies_with_other_allowances_have_other_fingerprints() -> None:
    assert POLICY.describe() != ADULT.describe()
    assert POLICY.describe() == SuggestionPolicy.load().describe()


# --- the build report -------------------------------------------------------------------------

ROWS = [("naked teens", 90), ("naked mole rats", 80), ("sex toys", 70), ("sussex", 60),
        ("fuck", 50), ("dicks sporting goods", 40), ("jane.roe@gmail.com", 30),
        ("new york", 100)]


def test_the_build_drops_blocked_entries_and_counts_them_in_the_manifest(tmp_path: Path) -> None:
    index = build_small_index(tmp_path, ROWS)
    served = {index.lexical.data.display[i] for i in range(len(index.lexical))}
    assert served == {"naked mole rats", "sussex", "dicks sporting goods", "new york"}
    safety = index.manifest["safety"]
    assert safety["removed"] == 4
    removed = {name: n for name, n in safety["by_category"].items() if n}
    assert removed == {"minors": 1, "personal_data": 1, "sexual": 1, "profanity": 1}
    assert index.manifest["counts"]["blocked"] == 4
    text = json.dumps(index.manifest)
    assert "naked teens" not in text and "gmail" not in text  # counts, never the texts


def test_an_adult_index_keeps_adult_entries_only(tmp_path: Path) -> None:
    index = build_small_index(tmp_path, ROWS, safety_allow=("sexual", "profanity"))
    served = {index.lexical.data.display[i] for i in range(len(index.lexical))}
    assert {"sex toys", "fuck"} <= served
    assert "naked teens" not in served and "jane.roe@gmail.com" not in served


def run_build(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    corpus = write_tsv(tmp_path / "rows.tsv", ROWS)
    out = tmp_path / f"idx{len(flags)}"
    return subprocess.run(
        [sys.executable, "-m", "typeahead", "build-index", "--corpus", str(corpus),
         "--text-col", "query", "--weight-col", "count", "--out", str(out), *flags],
        capture_output=True, text=True, timeout=120, check=False)


def test_build_index_prints_counts_and_shows_texts_only_when_asked(tmp_path: Path) -> None:
    quiet = run_build(tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert "removed 4 entries" in quiet.stderr and "minors 1" in quiet.stderr
    assert "naked teens" not in quiet.stderr + quiet.stdout
    shown = run_build(tmp_path, "--show-blocked")
    assert shown.returncode == 0, shown.stderr
    lines = set(shown.stdout.splitlines())
    assert {"blocked\tminors\tnaked teens", "blocked\tsexual\tsex toys"} <= lines
    assert "naked teens" not in shown.stderr


def test_build_index_refuses_an_unknown_or_severe_allow_category(tmp_path: Path) -> None:
    done = run_build(tmp_path, "--allow-category", "minors")
    assert done.returncode == 2 and "invalid choice: 'minors'" in done.stderr
    assert "Traceback" not in done.stderr


# --- the keystroke answer ---------------------------------------------------------------------


def test_explicit_input_gets_no_results_and_no_offer_but_filtered_suggestions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = [("sex offender registry", 90), ("sex and the city", 80), ("sex videos", 70),
            ("sexton", 60)]
    tiny_student(tmp_path / "student")
    index = build_small_index(tmp_path, rows, vectors=True, vector_factory="flat",
                              student_dir=tmp_path / "student")
    # Whatever the documents, an explicit input must not show them.
    result = {"id": "Doc#0", "title": "Doc", "snippet": "text", "score": 0.9}
    monkeypatch.setattr(SemanticLayer, "results", lambda *_a, **_k: [result])
    service = SuggestService(index=index, policy=POLICY)
    assert service.suggest("sex offender", 10)["results"] == [result]
    texts = [s["text"] for s in service.suggest("sex", 10)["suggestions"]]
    assert texts == ["sex offender registry", "sex and the city", "sexton"]
    explicit = service.suggest("sex video", 10)
    assert explicit["results"] == [] and explicit["offer_generate"] is False
    assert service.suggest("sex offender", 10)["suggestions"]


def test_an_index_built_without_the_policy_is_filtered_at_load(tmp_path: Path) -> None:
    index = build_small_index(tmp_path, ROWS, safety_allow=("sexual", "profanity"))
    strict = SuggestService(index=index, semantic=False, policy=POLICY)
    texts = [s["text"] for s in strict.suggest("s", 10)["suggestions"]]
    assert "sussex" in texts and "sex toys" not in texts
