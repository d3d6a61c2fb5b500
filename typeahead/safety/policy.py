"""The suggestion policy: which texts a search box must never suggest, and why.

A text is split into words (its matching key, apostrophes removed, every other character
that is not a letter or a digit a separator); each word is looked up, with its obfuscated
variants, in the category lists of ``typeahead/safety/lists`` (their README says what each
list means). Being word-aware is what keeps look-alikes: ``sussex``, ``emily dickinson``,
``cocktail dress`` and ``bass pro shops`` hold no listed word, and phrases such as
``dicks sporting goods`` or ``breast cancer`` are listed as safe, so their words are ignored.

Obfuscations are undone before the look-up:

- leetspeak in a word that mixes letters with digits or symbols (``s3x``, ``pr0n``, ``$ex``);
- single characters spaced or dotted apart (``s e x``, ``p.o.r.n``) are joined;
- repeated letters collapse (``fuuuck``), and a masked word (``f*ck``) matches its list word;
- glued words (``freeporn``, ``sexzool``): a list entry written ``~stem`` also matches inside
  a longer word, unless that word is a dictionary word listed in ``safe_words.txt``.

Some words are explicit only beside others: ``big dicks`` but not ``dicks``; ``hot teens`` but
not ``hot tubs``; ``horse`` makes an explicit text bestiality. ``categories`` returns every
category that applies; the most severe one not allowed decides.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources

from typeahead.errors import ConfigError
from typeahead.normalize import normalize

# Most severe first: a text in several categories is reported under the first.
CATEGORIES = ("minors", "bestiality", "sexual_violence", "slurs", "personal_data", "sexual",
              "profanity")
# What an adult site may allow (TYPEAHEAD_SAFETY_ALLOW); everything else is always blocked.
ADULT_CATEGORIES = frozenset({"sexual", "profanity"})
POLICY_VERSION = 1  # bump when the matching code (not the lists) changes what it blocks

# Roles of the lists, one bit each; a word may hold several.
_ROLES = ("sexual", "sexual_context", "suggestive", "suggestive_weak", "context", "minors",
          "minors_weak", "minors_direct", "animals", "bestiality", "violence", "slurs",
          "profanity")
_BIT = {role: 1 << i for i, role in enumerate(_ROLES)}
_STRONG_SUGGESTIVE = _BIT["suggestive"]
_ANY_SUGGESTIVE = _BIT["suggestive"] | _BIT["suggestive_weak"]
# Words beside which a sexual_context word is explicit.
_CONTEXT_PARTNERS = (_BIT["sexual"] | _ANY_SUGGESTIVE | _BIT["context"] | _BIT["minors"]
                     | _BIT["animals"])

_SPLIT = re.compile(r"[^0-9a-z\u00c0-\U0010ffff]+")
_APOSTROPHES = str.maketrans("", "", "'’`")
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b",
                       "9": "g", "@": "a", "$": "s", "!": "i", "|": "l", "+": "t"})
_LEET_CHARS = frozenset("0134578 9@$!|+".replace(" ", ""))
_LEET_NEXT_TO_LETTER = re.compile(r"[^\W\d_][0-9@$!|+]|[0-9@$!|+][^\W\d_]")
_ASCII_LEET = re.compile(r"[a-z][0-9@$!|+]|[0-9@$!|+][a-z]")
# ASCII keys (most of them): apostrophes vanish, every other non-alphanumeric is a space.
_ASCII_WORDS = str.maketrans({c: ("" if c in "'`" else " ") for c in map(chr, range(128))
                              if not c.isalnum()})
_DIGIT = re.compile(r"\d")
_MEMO_WORDS = 100_000  # words whose roles are remembered (about 10 MB at most)
_RUN = re.compile(r"(.)\1+")
_TRIPLE = re.compile(r"(.)\1\1")
# Personal data: e-mail addresses; phone numbers (with separators, or 10+ digits); US social
# security numbers; card numbers (checked with Luhn's digit).
_EMAIL = re.compile(r"[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}")
_PHONE = re.compile(r"(?<![\d-])(?:\(?\d{3}\)?[\s.-]?)?\d{3}[\s.-]\d{4}(?![\d-])|\d{10,}")
_SSN = re.compile(r"(?<!\d)\d{3}[\s-]\d{2}[\s-]\d{4}(?!\d)")
_CARD = re.compile(r"(?<!\d)(?:\d[\s-]?){12,18}\d(?!\d)")


@dataclass(frozen=True)
class _Lists:
    words: dict[str, int]  # word -> role bits
    phrases: dict[str, tuple[tuple[tuple[str, ...], int], ...]]  # first word -> (words, bits)
    stems: tuple[tuple[str, int], ...]  # glued stems and their bits
    glued: re.Pattern[str] | None  # any stem, for a one-search test per word
    safe_phrases: dict[str, tuple[tuple[str, ...], ...]]
    safe_words: frozenset[str]
    covers: dict[str, tuple[str, ...]]  # stem -> the safe words that hold it
    phrase_starts: frozenset[str]  # first words of listed and safe phrases
    by_length: dict[int, frozenset[str]]  # strong single words by length, for masked words


class SuggestionPolicy:
    """Classifies texts; ``allow`` names the adult categories this deployment permits."""

    def __init__(self, lists: _Lists, allow: Iterable[str] = (), fingerprint: str = "") -> None:
        allowed = frozenset(allow)
        bad = allowed - ADULT_CATEGORIES
        if bad:
            raise ConfigError(f"suggestion policy: {', '.join(sorted(bad))} can never be "
                              f"allowed; only {', '.join(sorted(ADULT_CATEGORIES))} can")
        self._lists = lists
        self.allow = allowed
        self.fingerprint = fingerprint
        # Words repeat across texts (Zipf): a word's roles are remembered, so a typical
        # keystroke costs one dict look-up per word. Plain str -> int: untracked by the GC.
        self._memo: dict[str, int] = {}

    @classmethod
    def load(cls, allow: Iterable[str] = ()) -> SuggestionPolicy:
        """The packaged lists (``typeahead/safety/lists``)."""
        texts = _read_packaged()
        digest = hashlib.sha256(f"v{POLICY_VERSION}".encode())
        for name in sorted(texts):
            digest.update(name.encode() + b"\0" + texts[name].encode() + b"\0")
        return cls(_compile(texts), allow, digest.hexdigest()[:16])

    def describe(self) -> dict[str, object]:
        """What a manifest records of the policy that filtered an index."""
        return {"fingerprint": self.fingerprint, "allow": sorted(self.allow)}

    def blocked(self, text: str) -> str | None:
        """The most severe category of ``text`` this policy blocks, or None when it may show."""
        for category in self.categories(text):
            if category not in self.allow:
                return category
        return None

    def categories(self, text: str) -> tuple[str, ...]:
        """Every category ``text`` falls in, most severe first."""
        key = normalize(text)
        bits = self._bits(key)
        private = ("@" in key or _DIGIT.search(key) is not None) and _personal_data(key)
        if not bits and not private:
            return ()
        found = _decide(bits) if bits else set()
        if private:
            found.add("personal_data")
        return tuple(c for c in CATEGORIES if c in found)

    def _bits(self, key: str) -> int:
        lists = self._lists
        words = _words(key)
        if not words:
            return 0
        bits = 0
        if lists.phrase_starts.isdisjoint(words):  # the usual case: no listed phrase starts
            for word in words:
                bits |= self._word_bits(word)
        else:
            ignored = _safe_positions(words, lists.safe_phrases)
            bits = _phrase_bits(words, ignored, lists.phrases)
            for i, word in enumerate(words):
                if i not in ignored:
                    bits |= self._word_bits(word)
        if _has_letter_run(words):
            for joined in _joined_letters(words):
                bits |= self._word_bits(joined)
        if "*" in key:
            bits |= self._masked_bits(key)
        return bits

    def _word_bits(self, word: str) -> int:
        bits = self._memo.get(word)
        if bits is None:
            if len(self._memo) >= _MEMO_WORDS:
                self._memo.clear()
            bits = self._memo[word] = self._look_up(word)
        return bits

    def _look_up(self, word: str) -> int:
        lists = self._lists
        bits = lists.words.get(word, 0)
        if word in lists.safe_words:
            return bits
        for variant in _variants(word):
            bits |= lists.words.get(variant, 0)
        if lists.glued is not None:
            for candidate in _glued_candidates(word):
                if candidate not in lists.safe_words and lists.glued.search(candidate):
                    bits |= _stem_bits(candidate, lists.stems, lists.covers)
        return bits

    def _masked_bits(self, key: str) -> int:
        """``f*ck``, ``sh**``: a masked chunk matches any strong word of its length."""
        bits = 0
        for chunk in key.split():
            if "*" not in chunk or not any(c.isalpha() for c in chunk):
                continue
            chunk = chunk.strip(".,!?")
            pattern = re.compile("".join("[a-z]" if c == "*" else re.escape(c) for c in chunk))
            for word in self._lists.by_length.get(len(chunk), ()):
                if pattern.fullmatch(word):
                    bits |= self._lists.words[word]
        return bits


def _decide(bits: int) -> set[str]:
    """The categories that a text's word roles add up to."""
    found: set[str] = set()
    context_active = bool(bits & _BIT["sexual_context"]) and bool(bits & _CONTEXT_PARTNERS)
    explicit = bool(bits & _BIT["sexual"]) or context_active
    violent = bool(bits & _BIT["violence"])
    if bits & _BIT["minors_direct"] or _about_minors(bits, explicit or violent):
        found.add("minors")
    if bits & _BIT["bestiality"] or (explicit and bits & _BIT["animals"]):
        found.add("bestiality")
    if violent:
        found.add("sexual_violence")
    if bits & _BIT["slurs"]:
        found.add("slurs")
    if explicit:
        found.add("sexual")
    if bits & _BIT["profanity"]:
        found.add("profanity")
    return found


def _about_minors(bits: int, explicit: bool) -> bool:
    if bits & _BIT["minors"]:
        return explicit or bool(bits & _ANY_SUGGESTIVE)
    if bits & _BIT["minors_weak"]:
        return explicit or bool(bits & _STRONG_SUGGESTIVE)
    return False


def _personal_data(key: str) -> bool:
    """An e-mail address, or a phone, social-security or card number."""
    if "@" in key and _EMAIL.search(key):
        return True
    return bool(_PHONE.search(key) or _SSN.search(key) or _card(key))


def _card(key: str) -> bool:
    for match in _CARD.finditer(key):
        digits = [int(c) for c in match.group() if c.isdigit()]
        if _luhn(digits):
            return True
    return False


def _luhn(digits: list[int]) -> bool:
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# --- words and their variants ---------------------------------------------------------------


def _words(key: str) -> list[str]:
    """The words of a key; a chunk mixing letters with leet characters is read as letters."""
    if key.isascii():
        if not _ASCII_LEET.search(key):
            return key.translate(_ASCII_WORDS).split()
    elif not _LEET_NEXT_TO_LETTER.search(key):
        return [w for w in _SPLIT.split(key.translate(_APOSTROPHES)) if w]
    key = key.translate(_APOSTROPHES)
    words: list[str] = []
    for chunk in key.split(" "):
        if _is_leet(chunk):
            chunk = chunk.translate(_LEET)
        words.extend(w for w in _SPLIT.split(chunk) if w)
    return words


def _has_letter_run(words: list[str]) -> bool:
    return sum(len(w) == 1 for w in words) >= 3


def _is_leet(chunk: str) -> bool:
    if chunk.isalpha() or chunk.isdigit():
        return False
    return any(c in _LEET_CHARS for c in chunk) and any(c.isalpha() for c in chunk)


def _variants(word: str) -> tuple[str, ...]:
    """Repeated letters collapsed: to one (``fuuuck``), and runs of three to two (``asss``)."""
    if not _RUN.search(word):
        return ()
    return (_RUN.sub(r"\1", word), re.sub(r"(.)\1{2,}", r"\1\1", word))


def _glued_candidates(word: str) -> tuple[str, ...]:
    # Collapsing every double letter would make innocent words glue ("sussex" -> "susex"),
    # so collapsed forms are searched only where a letter repeats three times (obfuscation).
    if _TRIPLE.search(word):
        return (word, _RUN.sub(r"\1", word))
    return (word,)


def _stem_bits(word: str, stems: Sequence[tuple[str, int]],
               covers: dict[str, tuple[str, ...]]) -> int:
    """The bits of every stem inside ``word`` that no safe word around it explains
    (``sexualpredators`` holds ``sex`` only inside ``sexual``)."""
    bits = 0
    for stem, stem_bits in stems:
        start = word.find(stem)
        while start >= 0:
            if not _covered(word, stem, start, covers.get(stem, ())):
                bits |= stem_bits
                break
            start = word.find(stem, start + 1)
    return bits


def _covered(word: str, stem: str, start: int, safe: tuple[str, ...]) -> bool:
    end = start + len(stem)
    for safe_word in safe:
        at = word.find(safe_word)
        while at >= 0:
            if at <= start and end <= at + len(safe_word):
                return True
            at = word.find(safe_word, at + 1)
    return False


def _joined_letters(words: list[str]) -> list[str]:
    """Runs of three or more single characters, joined: ``s e x`` -> ``sex``."""
    joined: list[str] = []
    run: list[str] = []
    for word in [*words, ""]:
        if len(word) == 1:
            run.append(word)
            continue
        if len(run) >= 3:
            joined.append("".join(run))
        run = []
    return joined


def _safe_positions(words: list[str], safe: dict[str, tuple[tuple[str, ...], ...]]
                    ) -> set[int]:
    ignored: set[int] = set()
    for i, word in enumerate(words):
        for phrase in safe.get(word, ()):
            if tuple(words[i:i + len(phrase)]) == phrase:
                ignored.update(range(i, i + len(phrase)))
    return ignored


def _phrase_bits(words: list[str], ignored: set[int],
                 phrases: dict[str, tuple[tuple[tuple[str, ...], int], ...]]) -> int:
    bits = 0
    for i, word in enumerate(words):
        for phrase, phrase_bits in phrases.get(word, ()):
            end = i + len(phrase)
            if tuple(words[i:end]) == phrase and not ignored.intersection(range(i, end)):
                bits |= phrase_bits
    return bits


# --- the lists --------------------------------------------------------------------------------

_FILES = {"sexual": "sexual.txt", "sexual_context": "sexual_context.txt",
          "suggestive": "suggestive.txt", "suggestive_weak": "suggestive_weak.txt",
          "context": "context.txt", "minors": "minors.txt", "minors_weak": "minors_weak.txt",
          "minors_direct": "minors_direct.txt", "animals": "animals.txt",
          "bestiality": "bestiality.txt", "violence": "violence.txt", "slurs": "slurs.txt",
          "profanity": "profanity.txt", "safe_phrases": "safe_phrases.txt",
          "safe_words": "safe_words.txt"}
# Lists whose single words a masked chunk (``f*ck``) may stand for.
_MASKABLE = ("sexual", "profanity", "slurs", "violence")


def _read_packaged() -> dict[str, str]:
    root = resources.files("typeahead.safety") / "lists"
    return {role: (root / name).read_text(encoding="utf-8") for role, name in _FILES.items()}


def _entries(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            out.append(entry.lower())
    return out


def _compile(texts: dict[str, str]) -> _Lists:
    words: dict[str, int] = {}
    phrases: dict[str, list[tuple[tuple[str, ...], int]]] = {}
    stems: dict[str, int] = {}
    for role in _ROLES:
        for entry in _entries(texts[role]):
            _add(entry, _BIT[role], words, phrases, stems)
    safe: dict[str, list[tuple[str, ...]]] = {}
    for entry in _entries(texts["safe_phrases"]):
        parts = tuple(_words(normalize(entry)))
        safe.setdefault(parts[0], []).append(parts)
    strong = {w for w, b in words.items() if any(b & _BIT[r] for r in _MASKABLE)}
    by_length: dict[int, set[str]] = {}
    for word in strong:
        by_length.setdefault(len(word), set()).add(word)
    ordered = tuple(sorted(stems.items()))
    glued = re.compile("|".join(re.escape(s) for s, _ in ordered)) if ordered else None
    safe_words = frozenset(_entries(texts["safe_words"]))
    covers = {stem: tuple(sorted(w for w in safe_words if stem in w)) for stem in stems}
    return _Lists(words, {k: tuple(v) for k, v in phrases.items()}, ordered, glued,
                  {k: tuple(v) for k, v in safe.items()}, safe_words, covers,
                  frozenset(phrases) | frozenset(safe),
                  {n: frozenset(ws) for n, ws in by_length.items()})


def _add(entry: str, bit: int, words: dict[str, int],
         phrases: dict[str, list[tuple[tuple[str, ...], int]]], stems: dict[str, int]) -> None:
    glued = entry.startswith("~")
    parts = tuple(_words(normalize(entry.lstrip("~"))))
    if not parts:
        return
    if len(parts) > 1:
        phrases.setdefault(parts[0], []).append((parts, bit))
        return
    words[parts[0]] = words.get(parts[0], 0) | bit
    if glued:
        stems[parts[0]] = stems.get(parts[0], 0) | bit
