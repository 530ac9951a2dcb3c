"""An evaluation corpus for PII detection that `pipeline/synthesize.py` did not write.

The scrub's recall on the synthetic tickets says only that the recognizers match the
synthesizer. This corpus is built from other sources, on purpose unlike the tickets:

- ``faker:<locale>`` sentences: Faker's own formats for nine locales (en_US, en_GB, en_CA,
  en_AU, de_DE, fr_FR, it_IT, es_ES, nl_NL) written in English running text, in sentence
  shapes of their own (no greetings, names in lower case, names that are common words,
  addresses on several lines, phone extensions and international prefixes, emails with
  subdomains and plus tags, IPv6, IBANs of many countries, dates of birth in words, handles,
  URLs that carry a name);
- ``hand``: sentences written and labelled by hand (``HAND`` below; ``[[TYPE:value]]`` marks
  a span), in the style of real support mail and chat.

Each line of ``data/raw/eval/pii_benchmark.jsonl``: ``{"id", "source", "text", "spans": [{"start",
"end", "entity_type", "value"}]}``. It is evaluation data only, never training data, and it is
raw PII (fake, but shaped like real values): it lives under ``data/raw`` like the tickets, and
is not committed (the same seed makes the same file; the benchmark builds it in memory).

Run: ``python -m benchmarks.pii_corpus [--sentences 1000] [--seed 7] [--out data/raw/eval/pii_benchmark.jsonl]``
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.common.io import save_jsonl
from pipeline.common.pii_eval import DIRECT  # noqa: F401  (re-exported: the identifiers recall is judged on)

OUT = Path("data/raw/eval/pii_benchmark.jsonl")
LOCALES = ("en_US", "en_GB", "en_CA", "en_AU", "de_DE", "fr_FR", "it_IT", "es_ES", "nl_NL")

# Entity types: Presidio's names where it has one, else the scrub policy's.
PERSON, EMAIL, PHONE, ADDRESS = "PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "STREET_ADDRESS"
CARD, IBAN, SSN, IP, DOB = "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS", "DATE_OF_BIRTH"
LOCATION, USERNAME, URL = "LOCATION", "USERNAME", "URL"

# Sentence shapes, unlike the synthesizer's tickets: {SLOT} is filled with a value of that type.
TEMPLATES: tuple[str, ...] = (
    "{PERSON} called twice about the outage and asked us to call back on {PHONE}.",
    "please update the billing contact to {person_lower}, reachable at {EMAIL}",
    "Parcel returned to sender. The label said:\n{ADDRESS_MULTI}\nCan you confirm the address?",
    "Ship the replacement to {ADDRESS_LINE} and send tracking to {EMAIL}.",
    "The invoice was made out to {PERSON} at {ADDRESS_LINE}; that is wrong.",
    "my card {CARD} was declined at checkout three times today",
    "Refund to IBAN {IBAN} please, account holder {PERSON}.",
    "We saw logins from {IP} and from {IPV6} within a minute of each other.",
    "For the record, I was born on {DOB_WORDS} and the form keeps rejecting it.",
    "SSN on file should be {SSN}, not the one in the letter.",
    "Ping {HANDLE} on the forum, they had the same problem with the firmware.",
    "The profile link {URL_NAME} shows someone else's orders.",
    "{PERSON}, {PERSON} and I share the family plan; only I should get the invoices.",
    "Switchboard number is {PHONE_EXT}. Ask for accounts.",
    "Our office moved to {CITY}, {COUNTRY}; the old address still shows on the portal.",
    "I live in {CITY} now, please change the delivery region.",
    "Contact: {PERSON} | {PHONE_INTL} | {EMAIL_PLUS}",
    "{person_lower} here again - still no answer on my ticket from last week.",
    "Send the documents to {EMAIL_SUB} rather than my personal address.",
    "The technician, {WORD_NAME}, never showed up at {ADDRESS_LINE}.",
    "Transfer from {IBAN} bounced; bank says the account name {PERSON} does not match.",
    "Can you remove {PHONE} from my account? It belongs to my ex-partner.",
    "Date of birth: {DOB_WORDS}. Name: {PERSON}. Postcode is in the address below.\n{ADDRESS_MULTI}",
    "Card ending in {CARD_LAST4} is fine, but the full number {CARD} got printed on the receipt.",
    "Hey, it's {first_lower}. my number changed to {PHONE}",
    "I'm writing on behalf of my mother, {PERSON}, who lives at {ADDRESS_LINE}.",
    "Device {IP} keeps dropping off the network after the update.",
    "Wire confirmation for {PERSON}: IBAN {IBAN}, reference 44821.",
    "Please call {PERSON} on {PHONE} or {PHONE_INTL} after 5 pm.",
    "username {HANDLE} cannot log in since Tuesday",
)  # fmt: skip

# Names that are also common English words: NER tends to read them as words.
WORD_NAMES = ("Grace Hope", "Rose Summers", "Hunter Stone", "Joy Baker", "Faith Young", "Will Cook",
              "Mark Bell", "Bill Rich", "Amber Field", "Sky Lane", "Dawn Brooks", "Hope Short")  # fmt: skip
COUNTRIES = ("Germany", "France", "Italy", "Spain", "the Netherlands", "Canada", "Australia", "the UK", "Ireland")

# Hand-written, hand-labelled sentences: [[TYPE:value]] marks a span.
HAND: tuple[str, ...] = (
    "hi this is [[PERSON:maria gonzalez]], my order never arrived",
    "[[PERSON:Tom]] from the warehouse said it left on friday",
    "Please forward this to [[PERSON:Dr. Anand Krishnamurthy]] in procurement.",
    "I moved from [[STREET_ADDRESS:14 Rue des Lilas, 69003 Lyon]] to [[STREET_ADDRESS:Keizersgracht 221, 1016 DV Amsterdam]] in March.",
    "call me on [[PHONE_NUMBER:+44 7700 900123]] any time before noon",
    "My work line is [[PHONE_NUMBER:(415) 555-0132 ext. 204]].",
    "the email bounced: [[EMAIL_ADDRESS:j.smith+orders@mail.example.co.uk]]",
    "Use [[EMAIL_ADDRESS:accounts@eu.billing.example.com]] for invoices, not my own.",
    "Card number [[CREDIT_CARD:4111 1111 1111 1111]] exp 09/28 was charged twice.",
    "it was the amex, [[CREDIT_CARD:3782-822463-10005]]",
    "IBAN: [[IBAN_CODE:DE89 3704 0044 0532 0130 00]]",
    "please pay into [[IBAN_CODE:GB33BUKB20201555555555]] as before",
    "Server [[IP_ADDRESS:2001:db8:85a3::8a2e:370:7334]] answers, [[IP_ADDRESS:198.51.100.23]] does not.",
    "My SSN is [[US_SSN:536-90-4399]] if you need it for the tax form.",
    "I was born on the [[DATE_OF_BIRTH:3rd of May 1984]].",
    "dob [[DATE_OF_BIRTH:12 August 1990]], name on the account [[PERSON:Priya Nair]]",
    "[[PERSON:Jürgen Müller]] und ich haben das Konto zusammen - sorry, English: we share the account.",
    "The courier left it with [[PERSON:Mrs O'Brien]] next door at [[STREET_ADDRESS:22 Baker Street, London NW1 6XE]].",
    "Address:\n[[STREET_ADDRESS:Apartment 5B\n350 Fifth Avenue\nNew York, NY 10118]]",
    "My husband [[PERSON:Kenji Watanabe]] placed the order, not me.",
    "please close the account of [[PERSON:Olusegun Adeyemi]], he passed away last month",
    "Reach [[PERSON:Siobhan]] on [[PHONE_NUMBER:087 123 4567]], she handles our IT.",
    "Our Sydney office: [[STREET_ADDRESS:Level 3, 100 George Street, Sydney NSW 2000]]",
    "[[PERSON:Chen Wei]] ([[EMAIL_ADDRESS:chen.wei@example.cn]]) approved the purchase.",
    "Profile: [[URL:https://forum.example.com/users/anna-kowalska]]",
    "My handle is [[USERNAME:@grumpy_gamer_77]] if you want to check the posts.",
    "Sent from [[PERSON:Luca Rossi]]'s iPhone",
    "the man on the phone said his name was [[PERSON:Bob]] and he worked for you",
    "Tel. [[PHONE_NUMBER:+49 30 901820]] (Zentrale), fax [[PHONE_NUMBER:+49 30 9018 2222]]",
    "Ms [[PERSON:Aoife Byrne]], [[STREET_ADDRESS:7 Grafton Street, Dublin 2, D02 K264]]",
    "Sure, my birthday is [[DATE_OF_BIRTH:January 5th, 1977]] - why do you need it?",
    "I think [[PERSON:Karen Hill]] in billing made the mistake, not [[PERSON:Jim]].",
    "Numéro de téléphone: [[PHONE_NUMBER:06 12 34 56 78]] - I am in [[LOCATION:Marseille]] this week.",
    "Contact [[PERSON:Giulia Bianchi]] at [[PHONE_NUMBER:+39 06 6982 1234]].",
    "visa [[CREDIT_CARD:4012888888881881]] - please stop charging it",
    "We are based in [[LOCATION:Rotterdam]], [[LOCATION:Netherlands]].",
    "[[PERSON:Ahmed Al-Farsi]] will collect the parcel, ID on request.",
    "reply to [[EMAIL_ADDRESS:someone.else@gmail.com]] please, this inbox is shared",
    "The router at [[IP_ADDRESS:10.0.0.138]] shows the error code, screenshot attached.",
    "My flat is [[STREET_ADDRESS:Flat 2, 41 Princes Street, Edinburgh EH2 2BY]].",
    "hello, [[PERSON:sam]] again. any news?",
    "Forwarding for [[PERSON:Lakshmi Iyer]]; her number is [[PHONE_NUMBER:+91 98765 43210]].",
    "The delivery note was signed by [[PERSON:P. Novak]].",
    "Please bill [[PERSON:Hannah Schmidt]], [[STREET_ADDRESS:Hauptstraße 12, 80331 München]].",
    "My old number [[PHONE_NUMBER:555-867-5309]] no longer works.",
    "Can [[PERSON:Olivia]] or [[PERSON:Noah]] from your team call me back?",
    "IBAN [[IBAN_CODE:FR14 2004 1010 0505 0001 3M02 606]], BIC PSSTFRPPPAR",
    "Spanish account: [[IBAN_CODE:ES91 2100 0418 4502 0005 1332]]",
    "Dutch account [[IBAN_CODE:NL91ABNA0417164300]], name [[PERSON:Sanne de Vries]]",
    "Born [[DATE_OF_BIRTH:1988-11-02]], in case the system asks.",
)  # fmt: skip


def _value_makers(
    fake: Any, us_fake: Any, locale: str, rng: random.Random
) -> dict[str, tuple[str | None, Callable[[], str]]]:
    """Slot name -> (entity type or None for no PII, how to make its text). SSNs are US ones
    (``us_fake``) whatever the locale: other locales' ``ssn()`` are other national ids."""

    def card() -> str:
        number = fake.credit_card_number(card_type=rng.choice(["visa16", "mastercard", "amex", "discover"]))
        sep = rng.choice(["", " ", "-"])
        step = 4
        groups = [number[i : i + step] for i in range(0, len(number), step)]
        return sep.join(groups) if sep else number

    def phone_ext() -> str:
        return f"{fake.phone_number()} {rng.choice(['ext.', 'x', 'extension'])} {rng.randint(10, 9999)}"

    def phone_intl() -> str:
        """The locale's own number written the international way (+CC ...), when it is a valid one."""
        import phonenumbers

        region = locale.split("_")[1]
        for _ in range(20):
            parsed = phonenumbers.parse(fake.phone_number().split("x")[0], region)
            if phonenumbers.is_valid_number(parsed):
                return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
        return fake.phone_number()

    def email_plus() -> str:
        user, domain = fake.email().split("@")
        return f"{user}+{rng.choice(['orders', 'shop', 'work', 'news'])}@{domain}"

    def email_sub() -> str:
        return f"{fake.user_name()}@{rng.choice(['mail', 'eu', 'corp', 'office'])}.{fake.domain_name()}"

    def dob_words() -> str:
        d = fake.date_of_birth(minimum_age=18, maximum_age=90)
        day = d.day
        suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
        return rng.choice(
            [f"{d:%B} {day}{suffix}, {d.year}", f"the {day}{suffix} of {d:%B} {d.year}", f"{day} {d:%B} {d.year}"]
        )

    return {
        "PERSON": (PERSON, fake.name),
        "person_lower": (PERSON, lambda: fake.name().lower()),
        "first_lower": (PERSON, lambda: fake.first_name().lower()),
        "WORD_NAME": (PERSON, lambda: rng.choice(WORD_NAMES)),
        "EMAIL": (EMAIL, fake.email),
        "EMAIL_PLUS": (EMAIL, email_plus),
        "EMAIL_SUB": (EMAIL, email_sub),
        "PHONE": (PHONE, fake.phone_number),
        "PHONE_EXT": (PHONE, phone_ext),
        "PHONE_INTL": (PHONE, phone_intl),
        "ADDRESS_LINE": (ADDRESS, lambda: fake.address().replace("\n", ", ")),
        "ADDRESS_MULTI": (ADDRESS, fake.address),
        "CARD": (CARD, card),
        "CARD_LAST4": (None, lambda: str(rng.randint(1000, 9999))),
        "IBAN": (IBAN, fake.iban),
        "SSN": (SSN, us_fake.ssn),
        "IP": (IP, fake.ipv4_public),
        "IPV6": (IP, fake.ipv6),
        "DOB_WORDS": (DOB, dob_words),
        "HANDLE": (USERNAME, lambda: "@" + fake.user_name()),
        "URL_NAME": (URL, lambda: f"https://{fake.domain_name()}/u/{fake.first_name().lower()}-{fake.last_name().lower()}"),
        "CITY": (LOCATION, fake.city),
        "COUNTRY": (LOCATION, lambda: rng.choice(COUNTRIES)),
    }  # fmt: skip


SLOT = re.compile(r"\{(\w+)\}")
MARK = re.compile(r"\[\[([A-Z_]+):(.*?)\]\]", re.DOTALL)


def render(template: str, makers: dict[str, tuple[str | None, Callable[[], str]]]) -> tuple[str, list[dict[str, Any]]]:
    """Fills a template's slots; returns the text and the labelled spans of its PII values."""
    text, spans, pos = "", [], 0
    for m in SLOT.finditer(template):
        text += template[pos : m.start()]
        entity, make = makers[m.group(1)]
        value = make()
        if entity is not None:
            spans.append({"start": len(text), "end": len(text) + len(value), "entity_type": entity, "value": value})
        text += value
        pos = m.end()
    return text + template[pos:], spans


def parse_marked(marked: str) -> tuple[str, list[dict[str, Any]]]:
    """A hand-labelled sentence (``[[TYPE:value]]`` marks) as its text and spans."""
    text, spans, pos = "", [], 0
    for m in MARK.finditer(marked):
        text += marked[pos : m.start()]
        value = m.group(2)
        spans.append({"start": len(text), "end": len(text) + len(value), "entity_type": m.group(1), "value": value})
        text += value
        pos = m.end()
    return text + marked[pos:], spans


def build(sentences: int, seed: int) -> list[dict[str, Any]]:
    """``sentences`` Faker sentences (locales and templates in turn) plus every hand sentence."""
    from faker import Faker

    rng = random.Random(seed)
    fakers = {}
    for i, locale in enumerate(LOCALES):
        fake = Faker(locale)
        fake.seed_instance(seed * 100 + i)
        fakers[locale] = fake
    makers = {locale: _value_makers(fakers[locale], fakers["en_US"], locale, rng) for locale in LOCALES}
    rows = []
    for i in range(sentences):
        locale = LOCALES[i % len(LOCALES)]
        template = TEMPLATES[rng.randrange(len(TEMPLATES))]
        text, spans = render(template, makers[locale])
        rows.append({"id": f"faker-{i:05d}", "source": f"faker:{locale}", "text": text, "spans": spans})
    for i, marked in enumerate(HAND):
        text, spans = parse_marked(marked)
        rows.append({"id": f"hand-{i:04d}", "source": "hand", "text": text, "spans": spans})
    return rows


def build_presidio_evaluator(sentences: int, seed: int) -> list[dict[str, Any]]:
    """``sentences`` labelled sentences from Microsoft's presidio-evaluator (its 200-odd templates
    and FakeNameGenerator.com records, 5 % of names in lower case, as its own README samples
    them): written by neither this project nor its synthesizer. Installed hash-pinned by
    ``make setup`` (requirements-models.txt)."""
    import contextlib
    import io
    import logging
    import os

    os.environ.setdefault("TQDM_DISABLE", "1")
    logging.getLogger("presidio-evaluator").setLevel(logging.ERROR)
    from presidio_evaluator.data_generator import PresidioSentenceFaker, presidio_additional_entity_providers
    from presidio_evaluator.data_generator.faker_extensions import HospitalProvider

    # its HospitalProvider queries Wikidata when built; no template uses hospitals, so leave it out
    providers = [p for p in presidio_additional_entity_providers if p is not HospitalProvider]
    random.seed(seed)  # it draws name layouts ("Leigha C. Mackay") before it seeds itself
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its defaults
        faker = PresidioSentenceFaker(
            locale="en_US", lower_case_ratio=0.05, random_seed=seed, entity_providers=providers
        )
        faker._sentence_faker.seed_instance(seed)  # its own seed() reaches only Faker's shared generator
        random.seed(seed)
        samples = faker.generate_new_fake_sentences(sentences)
    rows = []
    for i, sample in enumerate(samples):
        # the value as it stands in the text: its lower-cased sentences keep the labels' original case
        text = sample.full_text
        spans = [
            {
                "start": s.start_position,
                "end": s.end_position,
                "entity_type": s.entity_type,
                "value": text[s.start_position : s.end_position],
            }
            for s in sample.spans
        ]
        rows.append(
            {
                "id": f"pe-{i:05d}",
                "source": "presidio-evaluator",
                "text": text,
                "spans": sorted(spans, key=lambda s: s["start"]),
            }
        )
    return rows


SOURCES = {"presidio-evaluator": build_presidio_evaluator, "faker-locales": build}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source",
        choices=sorted(SOURCES),
        default="faker-locales",
        help="which generator (default: ours, Faker locales + hand-labelled)",
    )
    parser.add_argument(
        "--sentences",
        type=int,
        default=1000,
        help="generated sentences (faker-locales: the hand-labelled ones come on top)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    rows = SOURCES[args.source](args.sentences, args.seed)
    save_jsonl(args.out, rows)
    print(f"wrote {len(rows)} sentences, {sum(len(r['spans']) for r in rows)} labelled spans to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
