"""Person names that the spaCy NER misses, found by the cue next to them.

- a title: ``ms. Patricia``, ``Dr Okafor``, ``Mrs. Marie Hamanová``;
- a label: ``Name:    Sigtryggur Bernharðsson``, ``Account holder: ...``, ``Directed By: ...``,
  ``Billing address: Lesława Piotrowska`` (the addressee line of a postal block);
- a speaker in a transcript: a line that starts ``Arya: ...``;
- the first line of a signature or postal block: a line of two or three capitalised words
  (an initial allowed) at the start of the text or of a quoted block (``>``, ``}}``, ``|``; after
  one empty line at most), followed by a line break;
- a verb of speech or address: ``said Naile``, ``says Weld``, ``calls me Calan``, ``not by Albina
  Tomaszewska``, ``was called Aloisa Toscano``.

A name is one to three capitalised words (with initials); the cue alone never matches. Field
labels (``Phone:``, ``Address:``) and the bot/user roles of chat logs are not speakers.
"""

from __future__ import annotations

import re

from pipeline.recognizers._base import SpanRecognizer

_CAP = r"(?-i:[A-ZÀ-ÖØ-ÞĀ-ŽΑ-ΩА-Я])[\w'’-]*[^\W\d_]"
_INITIAL = r"(?-i:[A-Z])\.?"
NAME = rf"{_CAP}(?: (?:{_INITIAL} )?{_CAP}){{0,2}}"
_BREAK = r"(?:\n|\\n|$)"

_N = rf"(?P<n>{NAME})"
_TITLES = r"(?:mr|mrs|ms|miss|mx|dr|prof|sir|madam|mme|herr|frau|sr|sra)"
_LABELS = r"(?:name|full name|account holder|cardholder|directed by|written by|attn|c/o|(?:billing|shipping|delivery|mailing|postal) address)"
_SPEECH = r"(?:said|says|told|asked|(?:was|is|were|be|been) (?:called|named)|shouted at|calls me|called me|call me|tell|by|partner's name|name is|named (?:him|her|them|it))"
_QUOTE = r"[ \t>?}|]*"  # what quotes a block in mail and chat exports: "> ", "}} ", "| "
_LINE = rf"(?:^|\\n|\n){_QUOTE}"
_KIN = (
    r"(?:kid|son|daughter|child|wife|husband|partner|spouse|mother|mom|mum|father|dad|brother|sister|grandson|"
    r"granddaughter|grandmother|grandfather|nephew|niece|cousin|uncle|aunt|friend|colleague|coworker|boss|manager|neighbou?r)"
)

# (pattern with the name as group ``n``, score)
CUES: tuple[tuple[re.Pattern[str], float], ...] = tuple((re.compile(p, re.IGNORECASE | re.MULTILINE), s) for p, s in (
    (rf"\b{_TITLES}\. {_N}", 0.6),
    (rf"\b{_TITLES} {_N}", 0.5),
    (rf"\b{_LABELS}:?[ \t]+{_N}", 0.6),
    (rf"{_LINE}(?P<n>{_CAP})(?=:[ \"“])", 0.5),
    (rf"(?:\A|\\n\\n|\n\n|[>?] )(?:{_QUOTE}(?:\\n|\n))?{_QUOTE}(?P<n>{_CAP} (?:{_INITIAL} )?{_CAP}(?: {_CAP})?)[ \t]*(?={_BREAK})", 0.45),
    (rf"\b{_SPEECH} {_N}", 0.45),
    (rf"{_N}(?= (?:said|says|wrote|asked|replied|shouted)\b)", 0.45),
    (rf"\bname\b[^?\n]{{0,30}}\? *(?:user: *)?{_N}", 0.45),
    (rf"{_N}(?='s (?:address|phone|number|email|account|kid|son|daughter|wife|husband)\b)", 0.45),
    (rf"\b(?:my|our|his|her|their) {_KIN} {_N}", 0.5),
))  # fmt: skip

# line-initial words followed by a colon that are field labels or chat roles, not speakers
NOT_SPEAKERS = frozenset(
    "name phone mobile desk fax tel email e-mail website address date when where office cell note notes subject from to re "
    "bot user agent customer support q a ticket order status update error warning info personal billing zip postcode "
    "dob ssn card iban account reference ref id username password company title job time location city country state "
    "contact message reply answer question summary details total amount price".split()
)  # fmt: skip


class PersonCueRecognizer(SpanRecognizer):
    """Capitalised names after a title, a label, a speech verb, or as a transcript speaker."""

    ENTITY = "PERSON"
    NAME = "person_cues"

    def spans(self, text: str) -> list[tuple[int, int, float]]:
        out = []
        for pattern, score in CUES:
            for m in pattern.finditer(text):
                start, end = m.span("n")
                word = text[start:end].split(" ")[0].casefold()
                if start < end and word not in NOT_SPEAKERS:
                    out.append((start, end, score))
        return out
