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
  a longer word, unless that word is a dictionary word listed in ``safe_words.txt``; a word of
  ``sexual_glued.txt`` is explicit only glued into a longer one (``bigbooty.com``);
- a "%20" left for a space is read as one (``busty 20ladies``), and list entries with digits
  match the words as written (``adam4adam``, ``m4m`` in ``orlandom4m``); three digits in a row
  are a number, not leetspeak (``nikon8008``).

Some words are explicit only beside others: ``big dicks`` but not ``dicks``; ``hot teens`` but
not ``hot tubs``; ``sexy pics`` and ``teen pics`` but not ``kids photos``; ``horse`` makes an
explicit text bestiality; a listed phrase decides for its words (``girls gone wild`` is a site,
not ``girls`` beside something suggestive). ``categories`` returns every category that
applies; the most severe one not allowed decides.

Personal data is found by patterns: e-mail addresses (also with the "@" lost:
``jrtoots yahoo.com``), phone, card and social-security-like numbers.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from typeahead.errors import ConfigError
from typeahead.normalize import normalize
from typeahead.safety.model import SexualTextModel

# Most severe first: a text in several categories is reported under the first.
CATEGORIES = ("minors", "bestiality", "sexual_violence", "slurs", "personal_data", "sexual",
              "profanity")
# What an adult site may allow (TYPEAHEAD_SAFETY_ALLOW); everything else is always blocked.
ADULT_CATEGORIES = frozenset({"sexual", "profanity"})
POLICY_VERSION = 2  # bump when the matching code (not the lists) changes what it blocks

# Roles of the lists, one bit each; a word may hold several.
_ROLES = ("sexual", "sexual_context", "suggestive", "suggestive_weak", "context", "minors",
          "minors_weak", "minors_direct", "animals", "bestiality", "violence", "slurs",
          "profanity", "gallery", "pictures", "minors_teen", "sexual_glued", "clothing")
_BIT = {role: 1 << i for i, role in enumerate(_ROLES)}
_STRONG_SUGGESTIVE = _BIT["suggestive"] | _BIT["clothing"]
_ANY_SUGGESTIVE = _STRONG_SUGGESTIVE | _BIT["suggestive_weak"]
# Words beside which a sexual_context word is explicit.
_CONTEXT_PARTNERS = (_BIT["sexual"] | _ANY_SUGGESTIVE | _BIT["context"] | _BIT["minors"]
                     | _BIT["animals"] | _BIT["gallery"] | _BIT["pictures"])

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
_ASCII_DIGITS = frozenset("0123456789")
_LEET_GATE = frozenset("0123456789@$!|+")  # the characters _ASCII_LEET looks for
_LONG_DIGITS = re.compile(r"\d{3}")
# A sexual_glued.txt word counts inside a word at least this much longer: a site's name
# ("bigbooty"), not an inflection ("transsexuals", "vaginal").
_GLUED_EXTRA = 3
_HEAD = 3  # glued stems are indexed by their first three letters
_MEMO_WORDS = 100_000  # words whose roles are remembered (about 10 MB at most)
_RUN = re.compile(r"(.)\1+")
_TRIPLE = re.compile(r"(.)\1\1")
# Personal data: e-mail addresses; phone numbers (with separators, or 10+ digits); US social
# security numbers; card numbers (checked with Luhn's digit).
_EMAIL = re.compile(r"[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}")
_PHONE = re.compile(r"(?<![\d-])(?:\(?\d{3}\)?[\s.-]?)?\d{3}[\s.-]\d{4}(?![\d-])|\d{10,}")
_SSN = re.compile(r"(?<!\d)\d{3}[\s-]\d{2}[\s-]\d{4}(?!\d)")
_CARD = re.compile(r"(?<!\d)(?:\d[\s-]?){12,18}\d(?!\d)")
# E-mail addresses whose "@" was lost ("jrtoots yahoo.com", "www.jhenderson.gmail.com"): a
# handle, then a mail provider's domain, as the whole text. The handle must not be one of the
# provider's own service words ("mail yahoo.com", "groups.yahoo.com").
_MAIL_HOSTS = frozenset((
    "yahoo", "aol", "hotmail", "msn", "gmail", "sbcglobal", "comcast", "earthlink", "verizon",
    "bellsouth", "rr", "cox", "att", "juno", "netzero", "charter", "frontiernet", "optonline",
    "excite", "netscape", "adelphia", "compuserve", "prodigy", "peoplepc", "ameritech", "pacbell",
    "swbell", "worldnet", "mindspring", "bigpond", "btinternet", "sympatico", "lycos", "hushmail",
    "insightbb", "wowway", "cableone", "centurytel", "alltel", "qwest", "mchsi", "embarqmail",
    "suddenlink", "roadrunner",
))
_STRIPPED_EMAIL = re.compile(
    r"(?:www\.? ?)?(?P<user>[a-z0-9][a-z0-9._-]*[a-z0-9]) "
    r"(?P<host>(?:[a-z0-9-]+\.)*(?P<brand>[a-z0-9-]+)\. ?(?:com|net|org))")
_DOTTED_EMAIL = re.compile(r"(?:www\.)?(?P<user>[a-z0-9][a-z0-9_-]*)\.(?:gmail|hotmail)\.com")
_FIRST_LAST = re.compile(r"[a-z]{3,}\.[a-z]{3,}")
_SERVICE_WORDS = frozenset((
    "www", "http", "https", "mail", "email", "webmail", "my", "sign", "signin", "login", "log",
    "in", "search", "groups", "group", "games", "music", "sports", "news", "finance", "answers",
    "personals", "messenger", "chat", "people", "shopping", "travel", "weather", "maps", "movies",
    "autos", "geocities", "photos", "profiles", "members", "member", "go", "get", "free", "new",
    "open", "check", "hot", "home", "page", "site", "web", "the", "launch", "help", "account",
    "accounts", "customer", "service", "address", "book", "inbox", "w", "ww", "wwww",
    "registered", "game", "love", "install", "reinstall", "download", "upgrade", "update",
    "cancel", "profile", "myprofile", "settings", "video", "videos", "map", "pics", "radio", "tv",
    "kids", "teens", "jobs", "auto", "mobile", "billing", "support", "contact", "careers", "shop",
    "store", "deals", "coupons", "ttp", "tp", "htp",
)) | _MAIL_HOSTS
_URL_BITS = ("www", "com", "net", "org", "htt", "gov", "edu")
_POSSESSIVE = re.compile(r"([a-z]+)'s ([a-z]+)")
_NOT_POSSESSED = frozenset({"adult", "amateur", "oral", "mistress", "hustler", "penthouse"})
# A picture-gallery host of an adult site: "galleries.<name>.com".
_GALLERY_HOST = re.compile(r"(?:^|[\s.])(?:preview)?galleries\.[a-z0-9-]+\.[a-z]{2,}")
# "%20" left in a text where a space was ("busty 20ladies", "atk 20natural").
_URL_SPACE = re.compile(r"(?<![0-9a-z])20(?=[a-z]{3})")


@dataclass(frozen=True)
class _Lists:
    words: dict[str, int]  # word -> role bits
    phrases: dict[str, tuple[tuple[tuple[str, ...], int], ...]]  # first word -> (words, bits)
    # Glued stems, their bits and whether they count alone too, by their first _HEAD letters.
    stems: dict[str, tuple[tuple[str, int, bool], ...]]
    glued: re.Pattern[str] | None  # any stem, for a one-search test per word
    safe_phrases: dict[str, tuple[tuple[str, ...], ...]]
    safe_words: frozenset[str]
    covers: dict[str, tuple[str, ...]]  # stem -> the safe words that hold it
    phrase_starts: frozenset[str]  # first words of listed and safe phrases
    by_length: dict[int, frozenset[str]]  # strong single words by length, for masked words


class SuggestionPolicy:
    """Classifies texts; ``allow`` names the adult categories this deployment permits."""

    def __init__(self, lists: _Lists, allow: Iterable[str] = (), fingerprint: str = "",
                 model: SexualTextModel | None = None) -> None:
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
        self.model = model

    @classmethod
    def load(cls, allow: Iterable[str] = (), *, model: bool = True) -> SuggestionPolicy:
        """The packaged lists (``typeahead/safety/lists``) and, unless ``model`` is False, the
        packaged text model (``typeahead/assets/safety``) that screening consults too."""
        texts = _read_packaged()
        digest = hashlib.sha256(f"v{POLICY_VERSION}".encode())
        for name in sorted(texts):
            digest.update(name.encode() + b"\0" + texts[name].encode() + b"\0")
        learned = SexualTextModel.load() if model else None
        if learned is not None:
            digest.update(f"model {learned.fingerprint} {learned.threshold!r}".encode())
        return cls(_compile(texts), allow, digest.hexdigest()[:16], learned)

    def describe(self) -> dict[str, object]:
        """What a manifest records of the policy that filtered an index."""
        return {"fingerprint": self.fingerprint, "allow": sorted(self.allow),
                "model": None if self.model is None else self.model.describe()}

    def screened(self, text: str) -> str | None:
        """``blocked`` with the text model's second opinion: what a dictionary is screened
        with when an index is built. A text the lists let through but the model flags is
        ``sexual`` (blocked unless that is allowed), unless it holds a safe word or phrase of
        the lists: the model only ever adds ``sexual``, so allowing it never loosens the
        categories that are always blocked."""
        category = self.blocked(text)
        if category is not None or self.model is None or "sexual" in self.allow:
            return category
        if self.model.flags(text) and not self.protected(text):
            return "sexual"
        return None

    def protected(self, text: str) -> bool:
        """True when ``text`` holds a word of ``safe_words.txt`` or a ``safe_phrases.txt``
        phrase: look-alikes the lists were written to keep, which the model must not undo."""
        words = _words(normalize(text))
        lists = self._lists
        return (not lists.safe_words.isdisjoint(words)
                or bool(_safe_positions(words, lists.safe_phrases)))

    def blocked(self, text: str) -> str | None:
        """The most severe category of ``text`` this policy blocks, or None when it may show."""
        for category in self.categories(text):
            if category not in self.allow:
                return category
        return None

    def categories(self, text: str) -> tuple[str, ...]:
        """Every category ``text`` falls in, most severe first."""
        key = normalize(text)
        words = _words(key)
        digits = _has_digit(key)
        bits = self._bits(key, words, digits)
        private = ((("@" in key or digits) and _personal_data(key))
                   or ("." in key and _maybe_email(key, words) and _stripped_email(key)))
        if not bits and not private:
            return ()
        found = _decide(bits) if bits else set()
        if private:
            found.add("personal_data")
        return tuple(c for c in CATEGORIES if c in found)

    def _bits(self, key: str, words: list[str], digits: bool) -> int:
        lists = self._lists
        if not words:
            return 0
        bits = 0
        if lists.phrase_starts.isdisjoint(words):  # the usual case: no listed phrase starts
            for word in words:
                bits |= self._word_bits(word)
        else:
            ignored = _safe_positions(words, lists.safe_phrases)
            bits = _phrase_bits(words, ignored, lists.phrases)  # adds the phrases' positions
            for i, word in enumerate(words):
                if i not in ignored:
                    bits |= self._word_bits(word)
        if _has_letter_run(words):
            for joined in _joined_letters(words):
                bits |= self._word_bits(joined)
        return bits | self._written_bits(key, digits)

    def _written_bits(self, key: str, digits: bool) -> int:
        """What the key's characters say beyond its words: masks, digits, hosts, owners."""
        bits = 0
        if "*" in key:
            bits |= self._masked_bits(key)
        if digits:  # list entries with digits ("adam4adam") match the words as written
            for word in _literal_words(key):
                bits |= self._word_bits(word)
        if "galleries." in key and _GALLERY_HOST.search(key):
            bits |= _BIT["sexual"]
        if "'s " in key:
            bits |= self._possessive_bits(key)
        return bits

    def _possessive_bits(self, key: str) -> int:
        """A body word owned by someone is explicit: ``ryan's cock``, not ``dick's sporting``."""
        for _name, rest in _POSSESSIVE.findall(key):
            if self._word_bits(rest) & _BIT["sexual_context"] and rest not in _NOT_POSSESSED:
                return _BIT["context"]
        return 0

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
    # Picture words make suggestive words explicit ("sexy pictures"; a gallery word also the
    # weak ones: "hairy gallery", not "hot rod pictures"), and teen-coded words about minors
    # ("teen pictures"; with a gallery word also "young girls galleries", but not "kids
    # photos" or "spice girls pictures").
    gallery = bool(bits & _BIT["gallery"])
    pictures = gallery or bool(bits & _BIT["pictures"])
    explicit = (bool(bits & _BIT["sexual"]) or context_active
                or (pictures and bool(bits & _BIT["suggestive"]))
                or (gallery and bool(bits & _BIT["suggestive_weak"])))
    violent = bool(bits & _BIT["violence"])
    if (bits & _BIT["minors_direct"] or _about_minors(bits, explicit or violent)
            or (pictures and bits & _BIT["minors_teen"])
            or (gallery and bits & _BIT["minors"] and bits & _BIT["minors_weak"])):
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


def _maybe_email(key: str, words: list[str]) -> bool:
    return not _MAIL_HOSTS.isdisjoint(words) or key.count(" ") == 1


def _stripped_email(key: str) -> bool:
    """An e-mail address whose "@" was lost, as the whole text: ``jrtoots yahoo.com``,
    ``www.egchen37 yahoo.com``, ``fred.brazzale abnamro.com``, ``www.jhenderson.gmail.com``."""
    match = _STRIPPED_EMAIL.fullmatch(key)
    if match is not None:
        user = match["user"].removeprefix("www.")
        return _handle(user) and _mail_host(user, match["host"], match["brand"])
    match = _DOTTED_EMAIL.fullmatch(key)
    return match is not None and _handle(match["user"])


def _handle(user: str) -> bool:
    """A mailbox name, not a site's service or a piece of a URL ("mail", "www4", "st.louis")."""
    parts = user.split(".")
    return (len(user) >= 3 and not user.isdigit() and _SERVICE_WORDS.isdisjoint(parts)
            and not any(part.startswith(_URL_BITS) for part in parts))


def _mail_host(user: str, host: str, brand: str) -> bool:
    """A mail provider's domain (regional ones under ``rr.com``), or any plain domain after a
    ``first.last`` name (``fred.brazzale abnamro.com``; not ``st.louis cardinals.com``)."""
    labels = host.replace(" ", "").count(".") + 1
    if brand in _MAIL_HOSTS:
        return labels == 2 or brand == "rr"
    return (labels == 2 and _FIRST_LAST.fullmatch(user) is not None and len(brand) >= 4
            and brand.isalpha() and brand not in _SERVICE_WORDS)


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


def _has_digit(key: str) -> bool:
    if key.isascii():
        return not _ASCII_DIGITS.isdisjoint(key)
    return _DIGIT.search(key) is not None


def _words(key: str) -> list[str]:
    """The words of a key; a chunk mixing letters with leet characters is read as letters."""
    if key.isascii():
        if _LEET_GATE.isdisjoint(key) or not _ASCII_LEET.search(key):
            return key.translate(_ASCII_WORDS).split()
    elif not _LEET_NEXT_TO_LETTER.search(key):
        return [w for w in _SPLIT.split(key.translate(_APOSTROPHES)) if w]
    key = _URL_SPACE.sub(" ", key.translate(_APOSTROPHES))
    words: list[str] = []
    for chunk in key.split(" "):
        if _is_leet(chunk):
            chunk = chunk.translate(_LEET)
        words.extend(w for w in _SPLIT.split(chunk) if w)
    return words


def _plain_words(key: str) -> list[str]:
    """The words of a key as written, digits kept: how list entries are read."""
    if key.isascii():
        return key.translate(_ASCII_WORDS).split()
    return [w for w in _SPLIT.split(key.translate(_APOSTROPHES)) if w]


def _literal_words(key: str) -> list[str]:
    """For a key with digits or symbols inside words: its words as written, which list entries
    with digits match (``adam4adam``, ``m4m`` in ``orlandom4m``)."""
    return [word for word in _plain_words(key) if not word.isalpha()]


def _has_letter_run(words: list[str]) -> bool:
    return sum(len(w) == 1 for w in words) >= 3


def _is_leet(chunk: str) -> bool:
    # Three digits in a row are a number ("188wheelchairs", "nikon8008"), not leetspeak.
    if chunk.isalpha() or chunk.isdigit() or _LONG_DIGITS.search(chunk):
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


def _stem_bits(word: str, stems: dict[str, tuple[tuple[str, int, bool], ...]],
               covers: dict[str, tuple[str, ...]]) -> int:
    """The bits of every stem inside ``word`` that no safe word around it explains
    (``sexualpredators`` holds ``sex`` only inside ``sexual``). A stem of
    ``sexual_glued.txt`` counts only inside a longer word."""
    bits = 0
    found = {entry for i in range(len(word) - _HEAD + 1)
             for entry in stems.get(word[i:i + _HEAD], ())}
    for stem, stem_bits, alone in found | set(stems.get("", ())):
        if not alone and len(word) < len(stem) + _GLUED_EXTRA:
            continue
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
    """The bits of the listed phrases in ``words`` outside safe phrases; their positions join
    ``ignored``, as a listed phrase decides for its words ("girls gone wild" is a site's name,
    not "girls" beside something suggestive)."""
    bits = 0
    matched: set[int] = set()
    for i, word in enumerate(words):
        for phrase, phrase_bits in phrases.get(word, ()):
            end = i + len(phrase)
            if tuple(words[i:end]) == phrase and not ignored.intersection(range(i, end)):
                bits |= phrase_bits
                matched.update(range(i, end))
    ignored |= matched
    return bits


# --- the lists --------------------------------------------------------------------------------

# Each list file and the role its entries get; several files may share a role.
_FILES = {"sexual.txt": "sexual", "sites.txt": "sexual", "performers.txt": "sexual",
          "sexual_glued.txt": "sexual_glued", "sexual_context.txt": "sexual_context",
          "suggestive.txt": "suggestive", "clothing.txt": "clothing",
          "suggestive_weak.txt": "suggestive_weak",
          "context.txt": "context", "gallery.txt": "gallery", "pictures.txt": "pictures",
          "minors.txt": "minors", "minors_teen.txt": "minors_teen",
          "minors_weak.txt": "minors_weak", "minors_direct.txt": "minors_direct",
          "animals.txt": "animals", "bestiality.txt": "bestiality", "violence.txt": "violence",
          "slurs.txt": "slurs", "profanity.txt": "profanity",
          "safe_phrases.txt": "safe_phrases", "safe_words.txt": "safe_words"}
# Lists whose single words a masked chunk (``f*ck``) may stand for.
_MASKABLE = ("sexual", "profanity", "slurs", "violence")


def _read_packaged() -> dict[str, str]:
    root = resources.files("typeahead.safety") / "lists"
    return {name: (root / name).read_text(encoding="utf-8") for name in _FILES}


def _entries(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            out.append(entry.lower())
    return out


def _compile(texts: dict[str, str]) -> _Lists:
    """``texts``: each list file's name and text."""
    by_role: dict[str, list[str]] = {}
    for name, role in _FILES.items():
        by_role.setdefault(role, []).extend(_entries(texts[name]))
    words: dict[str, int] = {}
    phrases: dict[str, list[tuple[tuple[str, ...], int]]] = {}
    stems: dict[str, tuple[int, bool]] = {}
    for role in _ROLES:
        for entry in by_role.get(role, ()):
            _add(entry, role, words, phrases, stems)
    safe: dict[str, list[tuple[str, ...]]] = {}
    for entry in by_role["safe_phrases"]:
        parts = tuple(_plain_words(normalize(entry)))
        safe.setdefault(parts[0], []).append(parts)
    strong = {w for w, b in words.items() if any(b & _BIT[r] for r in _MASKABLE)}
    by_length: dict[int, set[str]] = {}
    for word in strong:
        by_length.setdefault(len(word), set()).add(word)
    by_head: dict[str, list[tuple[str, int, bool]]] = {}
    for stem, (bits, alone) in sorted(stems.items()):
        by_head.setdefault(stem[:_HEAD] if len(stem) >= _HEAD else "", []).append(
            (stem, bits, alone))
    glued = _trie_regex(sorted(stems)) if stems else None
    safe_words = frozenset(by_role["safe_words"])
    # A sexual_glued.txt stem is not explained by its own word or plural ("transsexuals" in
    # "orangecountytranssexuals.com"), which are listed to explain other stems.
    covers = {stem: tuple(sorted(w for w in safe_words if stem in w and (
        alone or w not in (stem, stem + "s", stem + "es")))) for stem, (_, alone) in stems.items()}
    return _Lists(words, {k: tuple(v) for k, v in phrases.items()},
                  {k: tuple(v) for k, v in by_head.items()}, glued,
                  {k: tuple(v) for k, v in safe.items()}, safe_words, covers,
                  frozenset(phrases) | frozenset(safe),
                  {n: frozenset(ws) for n, ws in by_length.items()})


def _trie_regex(stems: list[str]) -> re.Pattern[str]:
    """One pattern for any of ``stems``, nested by common prefixes: a word is scanned once per
    position, not once per stem (a plain alternation of ~270 stems costs ~6x more)."""
    trie: dict[str, Any] = {}
    for stem in stems:
        node = trie
        for char in stem:
            node = node.setdefault(char, {})
        node[""] = {}
    return re.compile(_trie_pattern(trie))


def _trie_pattern(node: dict[str, Any]) -> str:
    if "" in node:  # a stem ends here: the pattern only tells whether any stem is inside
        return ""
    branches = [re.escape(char) + _trie_pattern(child) for char, child in sorted(node.items())]
    return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"


def _add(entry: str, role: str, words: dict[str, int],
         phrases: dict[str, list[tuple[tuple[str, ...], int]]],
         stems: dict[str, tuple[int, bool]]) -> None:
    """One list entry: a word, a phrase, or a ``~stem`` (a word that also matches glued)."""
    glued = entry.startswith("~")
    parts = tuple(_plain_words(normalize(entry.lstrip("~"))))
    if not parts:
        return
    bit = _BIT[role]
    if len(parts) > 1:
        phrases.setdefault(parts[0], []).append((parts, bit))
        return
    if role == "sexual_glued":  # explicit only inside a longer word; alone, other lists decide
        old_bits, old_alone = stems.get(parts[0], (0, False))
        stems[parts[0]] = (old_bits | _BIT["sexual"], old_alone)
        return
    words[parts[0]] = words.get(parts[0], 0) | bit
    if glued:
        old_bits, _alone = stems.get(parts[0], (0, False))
        stems[parts[0]] = (old_bits | bit, True)
