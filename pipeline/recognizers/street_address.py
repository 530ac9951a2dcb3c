"""Street addresses in many national formats, and the postal block that follows them.

Anchors (any one starts a match; a bare capitalised word never does):

- a street-type word after the name: ``12 Meadow Drive``, ``254 Damvergi Street`` (English
  suffixes, after USPS Publication 28, Appendix C1, and Royal Mail / Australia Post usage);
- a street-type word before the name, with a house number on either side: ``Via Leopardi 83``,
  ``87 Rue du Niger``, ``Avenida Almirante Reis 50``, ``ul. Polna 4``;
- a street word that ends in a compound street suffix, with a house number:
  ``Favoritenstrasse 36``, ``Lumbyholmvej 46``, ``Ilmalankuja 57``, ``Bécsi utca 53``;
- a house number, a capitalised name and a second number (``637 Strojírenská 1006``), or a
  capitalised name and a number after an address cue (weak: needs context to count);
- a unit (``Apt. 559``, ``Suite 026``, ``Flat 3``) or a post box (``P.O. Box 63``,
  ``PSC 2322, Box 6025``, ``Unit 4670 Box 6562``, ``APO AA 88307``, ``USNS Šimić``).

From an anchor the match grows over what follows it on the same or the next lines (real or
escaped ``\\n``) while that looks like the rest of a postal address: units, capitalised or
upper-case place names, state codes, postcodes; it stops at a lower-case word, a label with a
colon, an e-mail, a long digit run (a phone) or after six steps.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from pipeline.common.regex_needs import text_can_match
from pipeline.recognizers._base import SpanRecognizer
from pipeline.recognizers._words import english_words, is_english

_B = r"(?:(?<=\\n)|\b)"  # a word boundary, also right after an escaped "\n" written out in the text
_NUM = r"\d{1,6}[A-Za-z]?(?:[/-]\d{1,5}[A-Za-z]?)?"
_NUMS = rf"{_NUM}(?: {_NUM})?"
_WORD = r"[^\W\d_][\w'’.-]*"
_CAP = r"(?-i:[A-ZÀ-ÖØ-ÞĀ-ŽΆΈ-ΏΑ-ΩА-Я])[\w'’.-]*"
# a particle or an abbreviation inside a street name (de, do, tee, u. 55), never an English function word
_FUNCTION = r"(?:it|to|me|us|at|on|in|of|for|and|or|the|is|my|his|her|our|you|we|by|as|a|an|be|am|are|was|i|so|if|no|not|all|any|can|get|got|has|had|now|out|up|per|via|was|off)"
_ORDINAL = r"\d{1,3}(?:st|nd|rd|th)"  # a numbered street: 43rd Avenue, 5th Street
_SHORT = rf"(?!{_FUNCTION}\b)(?-i:[a-zß-öø-ÿ]{{1,4}})(?:\.(?= \d))?"

SUFFIXES = (
    "Street St Road Rd Avenue Ave Av Drive Dr Lane Ln Way Court Ct Place Pl Crescent Cres Terrace Tce Terr "
    "Close Row Heights Hts Hill Grove Gardens Gdns Parade Pde Square Sq Boulevard Blvd Highway Hwy Parkway "
    "Pkwy Circle Cir Trail Trl Walk Mews Green Greens Stream Mill Mills Meadows Ridge Valley Rise Vale Wharf "
    "Quay Esplanade Loop Radial Track Crossing Bend Commons Estate Estates Springs Landing Alley Arcade Brae "
    "Causeway Chase Concourse Cove Dale Glade Glen Promenade Strand Vista Wynd Viaduct Expressway Freeway "
    "Turnpike Pike Junction Knoll Knolls Shoals Shores Summit Terr Throughway Trace Underpass Villages Ville "
    "Wells Forge Fork Forks Fort Harbor Harbour Haven Isle Lakes Lock Locks Manor Mount Orchard Pass Path "
    "Pines Plains Plaza Port Ports Prairie Ranch Rapids Run Spur Station Stravenue Tunnel Union Unions View "
    "Views Village Ways Bypass Cape Burg Burgs Motorway Circuit Grange Gate Keys Hollow Lodge Ramp Ridges "
    # the rest of USPS Publication 28's C1 list, and Australia Post's types
    "Annex Bayou Beach Bluff Bluffs Bottom Branch Bridge Brook Brooks Camp Canyon Center Centers Circles Cliff "
    "Cliffs Club Common Corner Corners Course Courts Coves Creek Crest Crossroad Curve Dam Divide Drives "
    "Extension Extensions Falls Ferry Field Fields Flat Flats Ford Fords Forest Forges Gardens Gateway Glens "
    "Groves Harbors Hills Inlet Island Islands Junctions Key Knolls Lake Lakes Lights Loaf Manors Meadow "
    "Mission Mountain Mountains Neck Oval Overpass Park Parks Parkways Passage Pine Plain Point Points Rapid "
    "Rest Rest River Roads Route Shoal Shore Skyway Spring Spurs Squares Streets Trafficway Trailer Walks "
    "Wall Well Colonnade Footway Plateau Courtyard Ground "
    # the abbreviation of a transliterated street word: 92 Vasileos Pavlou str, 250 Theotokopoulou Str.
    "Str str"
).split()
PREFIXES = (
    "Via Viale Piazza Piazzale Corso Largo Vicolo Strada Contrada Rue Avenue Boulevard Bd Chemin Place Allée "
    "Impasse Quai Route Cours Calle Avenida Avda Av Carrer Paseo Plaza Camino Carretera Travesía Ronda Rua R "
    "Rúa Travessa Praça Estrada Alameda Ulica Ul Aleja Al Odos Leoforos Bulevardul Strada Calea Aleea Ulitsa "
    # Slovenian, Croatian, Czech and Slovak squares, embankments and avenues
    "Trg Náměstí Nábřeží Třída Námestie Nábrežie Obala Šetalište "
    "Prospekt Jalan Jl ul al "
    # Spanish and Italian street types (as listed by the Spanish and Italian postal formats)
    "Acceso Bajada Callejón Cañada Cuesta Glorieta Pasadizo Pasaje Rambla Urbanización Vial Borgo Canale "
    "Incrocio Rotonda Stretto "
    # Greek: street, avenue, square
    "Οδός Οδ Λεωφόρος Λεωφ Πλατεία"
).split()
COMPOUND = (
    "straße strasse str gasse weg platz allee ring damm chaussee ufer steig pfad markt graben hof park "
    "straat laan plein gracht kade singel dijk dreef hof vej gade vænget vænge alle vei veien veg vegen "
    "gata gatan vägen väg gränd stig katu tie kuja polku kaari tori raitti utca út tér körút sor ulice "
    "ulica cesta náměstí trg braut stræti gata gasse rakpart rkp stíg stígur vegur sugárút fasor"
).split()
UNITS = r"(?:Apt|Apartment|Suite|Ste|Unit|Flat|Floor|Fl|Room|Rm|Bldg|Building|Dept|Studio|Piso|Puerta|Interno|Scala)"

_SUFFIX = "|".join(sorted(set(SUFFIXES), key=len, reverse=True))
# street types written in lower case too ("48 rue des Dunes"), none of them an English word
LOWER_PREFIXES = "rue calle rua rúa avenida strada ulica chemin allée impasse quai boulevard viale piazza οδός οδ λεωφόρος πλατεία".split()
# French street types that are English words too, taken in lower case only before a particle: 3 route de Lyon
_FRENCH_LOWER = r"(?:route|place|avenue|cours|passage)(?= (?:de|du|des|d'|la|le|les)\b)"
_PREFIX = "|".join(sorted(set(PREFIXES) | set(LOWER_PREFIXES), key=len, reverse=True)) + "|" + _FRENCH_LOWER
_COMPOUND = r"(?:[^\W\d_][\w'’-]*)?(?:" + "|".join(sorted(set(COMPOUND), key=len, reverse=True)) + r")\.?"
_MONTH = r"(?!(?:January|February|March|April|May|June|July|August|September|October|November|December|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)\b)"
# capitalised words that begin sentences or name things, never a street: "I'm 18", "Version 10"
_NOT_STREET = r"(?!(?:I|I'm|I’m|It's|It’s|We|We're|You|He|She|They|My|Our|Your|Version|Chapter|Order|Ticket|Page|Step|Item|Level|Windows|Model|Section|Day|Week|Year|Case|Error|Firmware|Update|Number|No|Invoice|Account)\b)"
_LINE_START = r"(?:^|(?<=\\n)|(?<=\n))[ \t>}|]*"  # the start of the text or of a line (real or escaped break)
_DIR = r"(?: (?:North|South|East|West|N|S|E|W|NE|NW|SE|SW)\b\.?)?"
_UNIT = rf"(?-i:{UNITS})\.? ?#?{_NUM}"

# the same anchors fail fast where no capital starts a word (the month and not-a-street checks are long)
_AT_CAP = r"(?=(?-i:[A-ZÀ-ÖØ-ÞĀ-ŽΆΈ-ΏΑ-ΩА-Я]))"
_COMPOUND_ANCHOR = rf"{_B}(?:{_NUMS} )?(?:{_CAP} ){{0,2}}{_COMPOUND}(?: {_NUM}\b)"

ANCHORS: tuple[tuple[re.Pattern[str], float], ...] = tuple((re.compile(p, re.IGNORECASE), s) for p, s in (
    # number, name, English street type: 12 Meadow Drive, 083 254 Damvergi Street, 1090 43rd Avenue
    (rf"{_B}{_NUMS} (?:(?:{_WORD}|{_ORDINAL})  ?){{0,4}}(?-i:{_SUFFIX})\b\.?{_DIR}(?: {_NUM}\b)?", 0.6),
    # capitalised name and English street type, no number: Pisano Row (weak: needs context)
    (rf"{_B}(?:{_CAP} ){{1,3}}(?-i:{_SUFFIX})\b\.?{_DIR}", 0.3),
    # street type first, house number after or before: Via Leopardi 83, 87 Rue du Niger
    (rf"{_B}(?:{_NUMS},? )?(?-i:{_PREFIX})\.? (?:{_WORD} ){{0,4}}{_WORD},? {_NUM}\b", 0.6),
    (rf"{_B}{_NUMS},? (?-i:{_PREFIX})\.? (?:{_WORD} ){{0,4}}{_WORD}", 0.6),
    # compound street word and number: Favoritenstrasse 36, Bécsi utca 53., 0671 Langenhorner Chaussee 76
    (_COMPOUND_ANCHOR, 0.6),
    # number, capitalised name, number: 637 Strojírenská 1006, 445 Cruce Casa de Postas 34, 03391 Bem rkp. 93
    (rf"{_B}{_NUMS} {_MONTH}{_NOT_STREET}(?:{_CAP} ){{0,2}}{_CAP} {_NUM}\b", 0.5),
    (rf"{_B}{_NUMS} {_MONTH}{_NOT_STREET}{_CAP}(?: {_NOT_STREET}{_CAP}| {_SHORT}){{1,4}} {_NUM}\b", 0.5),
    # a street line of its own: house number, name, number, then a line break or a comma (7257 Trg revolucije 61)
    (rf"{_LINE_START}{_NUMS} {_MONTH}{_NOT_STREET}{_CAP}(?: {_NOT_STREET}{_CAP}| (?-i:[a-zß-öø-ÿ][\w'’-]*)){{1,3}} {_NUM}(?=[ \t]*(?:\\n|\n|,|$))", 0.5),
    # name and number before a lower-case street word: El Roqueo 75 street, Velký průhon 426 street
    (rf"{_B}{_AT_CAP}{_MONTH}{_NOT_STREET}{_CAP}(?: (?:{_CAP}|(?-i:[a-zß-öø-ÿ][\w'’-]*))){{0,3}} {_NUM}(?= (?-i:street|road|avenue|square|lane)\b)", 0.6),
    # capitalised name and number (weak: needs an address word nearby): Helmstok 174, Kárpát u. 6
    (rf"{_B}{_AT_CAP}{_MONTH}{_NOT_STREET}(?:{_CAP} ){{0,2}}{_MONTH}{_NOT_STREET}{_CAP} {_NUM}\b", 0.2),
    (rf"{_B}{_AT_CAP}{_MONTH}{_NOT_STREET}{_CAP}(?: {_NOT_STREET}{_CAP}| {_SHORT}){{1,3}} {_NUM}\b", 0.2),
    # what follows "address:" or "addresses ... are:", from a house number: address: 52410 185 M. Sfakianaki
    (rf"\baddress(?:es)?\b[^\n.?!:]{{0,25}}?(?::|\bis\b|\bare\b)[ \t]*(?P<a>{_NUMS} {_MONTH}{_NOT_STREET}(?:{_CAP} ){{0,3}}{_CAP})", 0.6),
    # units and post boxes
    (rf"{_B}{_UNIT}\b", 0.5),
    (rf"{_B}P\.? ?O\.? ?Box \d{{1,6}}\b", 0.6),
    (rf"{_B}(?:PSC \d{{3,5}},? Box \d{{3,5}}|Unit \d{{3,5}},? Box \d{{3,5}})\b", 0.6),
    (rf"{_B}[ADF]PO A[AEP] \d{{5}}\b", 0.6),
    (rf"{_B}US(?:NS|NV|CGC|S) {_CAP}", 0.6),
))  # fmt: skip
# what a text needs for each anchor to match in it (a digit, "Box"): most anchors skip most texts.
# The compound anchor also needs its street word right before a number ("...strasse 36"), which
# the parser's check cannot see in an alternation of sixty words. Only the words right before a
# number are tried against them, not every word of the text.
_WORD_BEFORE_NUMBER = re.compile(r"([\w'’-]+)\.? \d")
_COMPOUND_TAIL = re.compile(rf"(?:{'|'.join(COMPOUND)})\Z", re.IGNORECASE)


def _compound_before_number(text: str) -> bool:
    return any(_COMPOUND_TAIL.search(m.group(1)) for m in _WORD_BEFORE_NUMBER.finditer(text))


def _needs(pattern: re.Pattern[str]) -> Callable[[str], bool]:
    can_match = text_can_match(pattern.pattern, pattern.flags)
    if pattern.pattern != _COMPOUND_ANCHOR:
        return can_match
    return lambda text: can_match(text) and _compound_before_number(text)


ANCHOR_NEEDS = tuple(_needs(pattern) for pattern, _ in ANCHORS)

# what may follow an anchor and still be part of the address
_SEP = r"(?:(?:[ ,]*(?:\\n|\n)[ \t>?}|,]*){1,2}| ?, ?|(?<!\.) )"  # line breaks and commas in any order; not across a full stop
_EMPTY = r"(?-i:nan|NaN|None|null|N/A)"  # an empty field written out by an export ("Saint Clair, nan, New Zealand")
# postcodes beyond the bare digits and the UK form: Canada (K1A 0B1), the Netherlands (4545HH), a province in brackets (FM)
_POSTCODE = r"(?-i:[A-Z]\d[A-Z] ?\d[A-Z]\d|\d{4} ?[A-Z]{2}|\([A-Z]{2}\)|\([A-Z][a-z]+\))"  # ... Cyprus (Greek) 64408
_PART = (
    rf"(?:{_UNIT}|{_EMPTY}\b|{_POSTCODE}(?!\w)|(?:the )?corner of|and (?=\d)|{_NUMS}|(?-i:[A-Z]{{2,3}})\b|(?-i:[A-Z]{{1,2}}\d[A-Z\d]? ?\d[A-Z]{{2}})\b"
    rf"|{_CAP}(?:/{_CAP})?(?: (?:(?-i:de|da|do|del|della|di|du|la|le|van|von|der|den|am|an|im|bei|sur|upon|on|u|en|y|e|nad|pod|na|aan|op|sous|lès|les|zum|zur)) {_CAP}| {_CAP}){{0,3}}(?: {_NUM}\b)?)"
)
EXTEND = re.compile(rf"{_SEP}(?:{_PART})(?![\w@])")
# what an anchor may grow back over: a corner, or a house number (with a lower-case particle an
# export lost the apostrophe of: "849 t Goylaan 46" for 't Goylaan)
LEAD = re.compile(rf"(?:\b(?:the )?corner of |\b\d{{1,6}} (?:{_SHORT} )?)$", re.IGNORECASE)
STOP = re.compile(
    r"^(?:Mobile|Desk|Fax|Phone|Tel|Email|E-mail|Website|Name|Address|Date|When|Where|Office|Cell)\b", re.IGNORECASE
)
MAX_STEPS = 6
# the street line above a unit or postal line that an anchor starts: "4093 110 Kontomari\n Apt. 925"
PREV_LINE = re.compile(
    rf"(?:^|(?<=\\n)|(?<=\n))[ \t>?}}|]*(?P<line>{_NUMS} {_MONTH}{_NOT_STREET}(?:{_CAP}(?: |(?=[ \t,]*(?:\\n|\n)))){{1,3}})"
    rf"[ \t,]*(?:\\n|\n)[ \t>?}}|]*$"
)
WEAK = 0.4  # the policy's minimum: a weak anchor under it needs a context word, or a sign below
CORNER, FOREIGN = 0.6, 0.5
# between two streets of a corner: "4123 Robson St St. and Vizirov Lodge St.", "út 78. St. and ..."
CORNER_GAP = re.compile(rf"\.?(?: (?-i:{_SUFFIX})\.?)?,? (?:and|&) $")
FOREIGN_SHAPE = re.compile(rf"(?:{_CAP} ){{1,2}}{_NUM}")
LOCATIVE = re.compile(r"\b(?:on|at) $", re.IGNORECASE)
_LETTERS = re.compile(r"[^\W\d_]{3,}")
CLAUSE_END = re.compile(r"[ \t]*(?:[.,;:!?)]|\\n|\n|$)")
# a full stop after a word of four or more letters or a number, then a capital: a sentence ends
# (an abbreviation such as "St. Jennifer" or "Apt. 4" does not)
SENTENCE_END = re.compile(r"(\w{4,}|\d)\.\s+(?=[A-Z])")


class StreetAddressRecognizer(SpanRecognizer):
    """Street lines, units and post boxes, grown over the postal block that follows."""

    ENTITY = "STREET_ADDRESS"
    NAME = "street_address_block"
    CONTEXT = (
        "address",
        "live",
        "lives",
        "located",
        "deliver",
        "delivery",
        "ship",
        "send",
        "sent",
        "street",
        "moved",
        "office",
        "meet",
        "return",
        "post",
        "mail",
    )

    def __init__(self, ner_model: str = "") -> None:
        self.ner_model = ner_model
        super().__init__()

    def load(self) -> None:
        self._english()

    def _english(self) -> frozenset[str]:
        """The spaCy package's English words (none without a package: no name counts as foreign)."""
        return english_words(self.ner_model) if self.ner_model else frozenset()

    def spans(self, text: str) -> list[tuple[int, int, float]]:
        found: list[tuple[int, int, float]] = []
        for (pattern, score), can_match in zip(ANCHORS, ANCHOR_NEEDS, strict=True):
            if not can_match(text):
                continue
            for m in pattern.finditer(text):
                start, end = m.span("a") if "a" in pattern.groupindex else m.span()
                lead = LEAD.search(text, max(0, start - 20), start)
                if lead:
                    start = lead.start()
                above = PREV_LINE.search(text, max(0, start - 80), start)
                if above:
                    start = above.start("line")
                end = self._grow(text, end)
                found.append((start, end, score))
        return _merge(self._lift(text, found))

    def _lift(self, text: str, found: list[tuple[int, int, float]]) -> list[tuple[int, int, float]]:
        """Weak matches that count after all: a street named at a corner with a found address
        ("the corner of 4123 Robson St. and **Vizirov Lodge St.**", joined into one span), and a
        name that is no English word with a house number, after "on"/"at" and ending its clause
        ("The bus station is on **Midhraun 10**"; "on Windows 10" and "on Ubuntu 22 and" stay)."""
        strong = [(s, e) for s, e, score in found if score >= WEAK]
        out = []
        for start, end, score in found:
            if score < WEAK:
                before = next((s for s, e in strong if e <= start and CORNER_GAP.match(text, e, start)), None)
                after = next((e for s, e in strong if end <= s and CORNER_GAP.match(text, end, s)), None)
                if before is not None or after is not None:
                    start = before if before is not None else start
                    end = after if after is not None else end
                    score = CORNER
                elif self._foreign_street(text, start, end):
                    score = FOREIGN
            out.append((start, end, score))
        return out

    def _foreign_street(self, text: str, start: int, end: int) -> bool:
        """A weak "Name 49" after "on"/"at", ending its clause, with no English word in the name."""
        words = _LETTERS.findall(text, start, end)
        english = self._english()
        return (
            bool(words)
            and bool(FOREIGN_SHAPE.fullmatch(text, start, end))
            and bool(LOCATIVE.search(text, max(0, start - 6), start))
            and bool(CLAUSE_END.match(text, end))
            and not any(is_english(w, english) for w in words)
        )

    @staticmethod
    def _grow(text: str, end: int) -> int:
        """The end of the address: ``end`` moved over at most MAX_STEPS continuation parts."""
        for _ in range(MAX_STEPS):
            m = EXTEND.match(text, end)
            if not m or STOP.match(text[m.end() - len(_part_of(m.group(0))) :]) or _lower_start(m.group(0)):
                break
            stop = SENTENCE_END.search(m.group(0))
            if stop:  # "... Chartier-sur-Lévy. Account ACCT-7409539": the address ends with its sentence
                return m.start() + stop.start() + len(stop.group(1))
            end = m.end()
        return end


_LEADING_SEP = re.compile(r"^(?:[ ,>?}|\t\n]|\\n)+")


def _part_of(piece: str) -> str:
    """A continuation without the separators before it (an escaped ``\\n`` is one, the letter n alone is not)."""
    return _LEADING_SEP.sub("", piece)


def _lower_start(piece: str) -> bool:
    """A continuation that starts with a lower-case word (other than ``and``/``corner`` or an empty
    field) ends the address."""
    word = _part_of(piece)
    return (
        bool(word) and word[0].islower() and not word.startswith(("and ", "corner", "the corner", "nan", "null", "n/a"))
    )


def _merge(spans: list[tuple[int, int, float]]) -> list[tuple[int, int, float]]:
    """Overlapping matches become one span with the highest score."""
    out: list[list] = []
    for start, end, score in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
            out[-1][2] = max(out[-1][2], score)
        else:
            out.append([start, end, score])
    return [(s, e, sc) for s, e, sc in out]
