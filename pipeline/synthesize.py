"""Demo data: a seeded, synthetic enterprise customer-support dataset with embedded PII.

Writes ``data/raw/tickets.jsonl`` (one ticket per line) and ``data/raw/pii_spans.jsonl`` (the
ground-truth character spans of every PII value in the free text, so the scrub stage's
recall can be measured). Every value is fake (Faker), but shaped like real tickets: names,
emails, phones, postal addresses, credit cards, IBANs, SSNs, IPs, dates of birth and
company-internal ids (``ACCT-1234567`` accounts, ``EMP-12345`` employees) in many formats.

Each ticket has a category (6 classes) and a priority (4 levels) that follow from its text,
and protected attributes (gender, age band, region) as metadata for fairness evaluation
only. As in real tickets, the text also carries demographic signals (pronouns, family and
gendered terms, age statements), so an injected label bias (``synthesize.label_bias``) is
learnable, and measurable downstream.

Not a DVC stage: it produces the pipeline's source data, committed to git. With the
committed ``params.yaml`` it reproduces the committed files byte for byte.

Run: ``python -m pipeline.synthesize [--rows N] [--seed S] [--bias-strength X] [--bias-levels L] [--out-dir DIR]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.common.errors import GovtuneError, run_main
from pipeline.common.io import save_jsonl
from pipeline.common.params import SynthesizeParams, load_params

log = logging.getLogger(__name__)

CATEGORIES = ("billing", "technical_issue", "account_access", "shipping", "refund", "product_question")
PRIORITIES = ("low", "medium", "high", "urgent")  # ordered, lowest first
CHANNELS = ("email", "chat", "web_form", "phone")
GENDERS = ("female", "male", "nonbinary")
AGE_BANDS = ("18-29", "30-44", "45-59", "60+")
REGIONS = ("north_america", "europe", "south_asia", "latin_america")

# The columns of tickets.jsonl, in order. Protected attributes come last and are
# evaluation-only metadata (EU AI Act Art. 10(5)): they never enter training text.
COLUMNS = (
    "ticket_id", "customer_id", "created_at", "channel", "message", "reply",
    "category", "priority", "gender", "age_band", "region",
)  # fmt: skip
FREE_TEXT_FIELDS = ("message", "reply")
OVERLONG_CHARS = 20_000

# Entity types of the sidecar: Presidio's names where Presidio has one, else our own.
PERSON, EMAIL, PHONE, ADDRESS = "PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "STREET_ADDRESS"
CARD, IBAN, SSN, IP, DOB = "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS", "DATE_OF_BIRTH"
ACCOUNT, EMPLOYEE = "ACCOUNT_ID", "EMPLOYEE_ID"

# Slots a template may use, and the entity type each one is (None: not PII).
SLOT_ENTITY: dict[str, str | None] = {
    "name": PERSON, "first": PERSON, "last": PERSON, "agent": PERSON, "email": EMAIL, "phone": PHONE,
    "address": ADDRESS, "card": CARD, "iban": IBAN, "ssn": SSN, "ip": IP, "dob": DOB,
    "account": ACCOUNT, "emp": EMPLOYEE, "order": None, "product": None, "amount": None,
    "device": None, "days": None,
}  # fmt: skip

REGION_LOCALES = {
    "north_america": ("en_US",),
    "europe": ("en_GB", "de_DE", "fr_FR"),
    "south_asia": ("en_IN",),
    "latin_america": ("es_MX",),
}
COUNTRY_PHONE = {"en_US": "+1", "en_GB": "+44", "de_DE": "+49", "fr_FR": "+33", "en_IN": "+91", "es_MX": "+52"}
# IBAN layouts used: country -> (leading letters, then digits) of the BBAN.
IBAN_BBAN = {"GB": (4, 14), "DE": (0, 18), "FR": (0, 23), "ES": (0, 20), "NL": (4, 10)}
IBAN_COUNTRY = {"en_GB": "GB", "de_DE": "DE", "fr_FR": "FR"}
US_AREA_CODES = (212, 213, 305, 312, 404, 415, 503, 512, 602, 617, 646, 702, 713, 718, 773, 808, 818, 917, 972)
PRODUCTS = ("Nimbus Router X2", "AeroDesk Pro", "Lumen Smart Bulb", "Orbit Earbuds", "Vega Tablet 10",
            "Pulse Fitness Band", "Atlas Backup Drive", "Nova Coffee Maker", "Zephyr Air Purifier")  # fmt: skip
# A shifted batch (``--shift``, for drift monitoring): another category mix, a new product line,
# and account ids in a new format the scrubber's recognizer does not know.
SHIFT_CATEGORY_WEIGHTS = {
    "refund": 8,
    "shipping": 6,
    "billing": 1,
    "technical_issue": 1,
    "account_access": 1,
    "product_question": 1,
}
SHIFT_PRODUCTS = ("Quasar Home Hub", "Helix VR Headset", "Tundra E-Scooter", "Comet Drone Mini", "Solace Sleep Mask")
DEVICES = ("iPhone", "Android phone", "Windows laptop", "MacBook", "Chromebook", "iPad")

# --- Message templates, per category. {slots} are filled per ticket. -----------------------
MESSAGE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "billing": (
        "I was charged twice for order {order}. The card ending up on the bill is {card}. My account number is {account}.",
        "My invoice shows {amount} but my plan should be cheaper. Account {account}, registered email {email}.",
        "Why did you bill my card {card} again this month? I cancelled the subscription on account {account}.",
        "There is a charge of {amount} I don't recognise on my statement. Please check account {account}; you can call me on {phone}.",
        "Hello, this is {name}. The payment for order {order} was taken from the wrong card, {card}, instead of my usual one.",
    ),
    "technical_issue": (
        "The {product} keeps disconnecting every few minutes. I already restarted it. My account is {account}.",
        "Your app crashes on my {device} whenever I open settings. The login came from IP {ip} if that helps.",
        "My {product} won't turn on after the last firmware update. I'm {name}, account {account}.",
        "I get an error 500 when I try to sync the {product}. Logs show my address as {ip}. Email me at {email}.",
        "Since yesterday the {product} shows a blinking red light and nothing works. Call me at {phone}.",
    ),
    "account_access": (
        "I can't log in to my account {account}. I reset the password twice. My email is {email} and my phone is {phone}.",
        "I'm locked out after too many attempts. For verification, my SSN is {ssn} and my date of birth is {dob}.",
        "Someone changed the email on my account {account}; I never did that. The login was from {ip}. Please lock it.",
        "Please update my phone number to {phone} and my mailing address to {address}. Account {account}.",
        "The two-factor code never arrives. My name is {name}, born {dob}, account {account}.",
    ),
    "shipping": (
        "My order {order} of the {product} still hasn't arrived. Shipping address: {address}.",
        "The tracking for order {order} hasn't moved in {days} days. Please send it to {address} instead.",
        "The courier left my parcel at the wrong house. I live at {address}. You can reach me at {phone}.",
        "Order {order} arrived damaged, the {product} box was crushed. I'm {name}, email {email}.",
        "Can you change the delivery address for order {order} to {address}? Thanks, {name}",
        "Customs is asking for my tax id for order {order}. It's {ssn}, and I was born {dob}.",
    ),
    "refund": (
        "I returned the {product} {days} days ago and still have no refund. Please send the money to IBAN {iban}.",
        "I want a refund for order {order}, the {product} stopped working. Refund to card {card} please.",
        "You promised a refund of {amount} for order {order}. My bank account is {iban}, name on it: {name}.",
        "Please cancel order {order} and refund me. Account {account}, email {email}.",
        "I was told to give my SSN {ssn} for the refund check on order {order}. Send it to {address}.",
        "The refund for order {order} went to an old card. Could you send it to IBAN {iban}? Phone {phone}.",
    ),
    "product_question": (
        "Does the {product} work with a {device}? I'm thinking of buying two.",
        "What is the warranty on the {product}? I bought it with account {account}.",
        "Is there a way to use the {product} without the app? Please reply to {email}.",
        "Can the {product} be mounted on a wall? I'd like to know before ordering. Thanks, {name}",
        "Which accessories fit the {product}? My account is {account} in case you need it.",
    ),
}

# Urgency phrases decide the priority label (before any injected bias).
PRIORITY_PHRASES: dict[str, tuple[str, ...]] = {
    "low": ("No rush at all.", "Whenever you have time.", "Just curious, not urgent."),
    "medium": ("Please look into it when you can.", "I'd appreciate an answer this week.", "Thanks in advance."),
    "high": ("Please fix this soon, it's getting frustrating.", "I need this sorted in the next day or two.",
             "This is the second time I'm writing about it."),
    "urgent": ("This is URGENT, I need it fixed today!", "Please help immediately, I can't work like this.",
               "Urgent: this is costing me money every hour."),
}  # fmt: skip
PRIORITY_WEIGHTS: dict[str, tuple[float, ...]] = {  # low, medium, high, urgent
    "billing": (0.15, 0.35, 0.35, 0.15),
    "technical_issue": (0.15, 0.35, 0.3, 0.2),
    "account_access": (0.05, 0.25, 0.4, 0.3),
    "shipping": (0.2, 0.4, 0.3, 0.1),
    "refund": (0.15, 0.4, 0.35, 0.1),
    "product_question": (0.6, 0.3, 0.08, 0.02),
}

# Demographic signals as they appear in real tickets (they survive PII scrubbing).
GENDER_SIGNALS: dict[str, tuple[str, ...]] = {
    "female": ("My husband set this up for me.", "As a mother of two I don't have time for this.",
               "I'm a single mom and work from home.", "My daughter said I should write to you as a woman who relies on this daily."),
    "male": ("My wife set this up for me.", "As a father of two I don't have time for this.",
             "I'm a single dad and work from home.", "My son said I should write to you, as a guy who relies on this daily."),
    "nonbinary": ("My partner set this up for me.", "As a parent of two I don't have time for this.",
                  "I'm nonbinary, please use they/them.", "My kid said I should write to you."),
}  # fmt: skip
AGE_SIGNALS: dict[str, tuple[str, ...]] = {
    "18-29": ("I'm {age} and a student.", "I'm {age}, just moved into my first apartment."),
    "30-44": ("I'm {age} and juggling work and kids.", "I'm {age} and use this for my job."),
    "45-59": ("I'm {age} and not very technical.", "I'm {age} and have been a customer for years."),
    "60+": ("I'm {age} and retired, so please keep it simple.", "I'm {age}, my grandkids usually help me with this."),
}
AGE_RANGES = {"18-29": (18, 29), "30-44": (30, 44), "45-59": (45, 59), "60+": (60, 85)}
HONORIFIC = {"female": "Ms.", "male": "Mr.", "nonbinary": "Mx."}
GREETINGS = ("Hi!", "Hello.", "Good morning.", "Hi there!", "Dear support team,")
SIGNOFFS = ("Thanks, {name}", "Regards, {name}", "Best, {first}", "{name}", "Cheers, {first}")
CONTACT_LINES = (
    "You can reach me at {phone}.",
    "My email is {email}.",
    "Call me back on {phone}.",
    "Reply to {email} please.",
)

REPLY_TEMPLATES: dict[str, tuple[str, ...]] = {
    "billing": ("I've reviewed the charges on account {account} and raised a correction with our billing team.",
                "I can see the duplicate payment for order {order}; a credit will appear within 5 business days."),
    "technical_issue": ("Please hold the reset button for 10 seconds, then re-pair the {product}; I've logged the case on account {account}.",
                        "Our engineers know about this bug; a fix ships next week. I've added your account {account} to the ticket."),
    "account_access": ("I've verified your identity and unlocked account {account}. A reset link went to {email}.",
                       "For your security I've reset the login on account {account}; please set a new password."),
    "shipping": ("I've asked the courier to redeliver order {order} to {address}.",
                 "Order {order} has been re-shipped with express delivery at no cost."),
    "refund": ("Your refund for order {order} has been approved and will reach you in 3-5 business days.",
               "I've issued the refund of {amount}; you'll see it on your statement shortly."),
    "product_question": ("Yes, the {product} works with that; the manual has a setup guide.",
                         "The {product} has a two-year warranty; accessories are listed on our shop page."),
}  # fmt: skip
REPLY_OPENERS = ("Hi {first},", "Hello {first},", "Dear {hon} {last},", "Hi {first}, thanks for reaching out.")
REPLY_CLOSERS = ("Best regards, {agent} (employee {emp})", "Kind regards, {agent}, support team, ID {emp}",
                 "{agent} | Customer Care | {emp}")  # fmt: skip
FILLER = "Additional context copied from an earlier email thread follows. "

_SLOT = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Customer:
    """One synthetic customer: identity, PII and protected attributes."""

    customer_id: str
    locale: str
    gender: str
    age_band: str
    age: int
    region: str
    first: str
    last: str
    email: str
    phone: str
    address: str
    card: str
    iban: str
    ssn: str
    ip: str
    dob: str
    account: str


@dataclass(frozen=True)
class Span:
    """A PII value at ``text[start:end]`` of one field of one ticket."""

    field: str
    start: int
    end: int
    entity_type: str
    value: str


def render(template: str, values: dict[str, str], field: str) -> tuple[str, list[Span]]:
    """Fills ``{slots}`` and returns the text and the spans of the PII slots in it."""
    parts: list[str] = []
    spans: list[Span] = []
    pos = 0
    cursor = 0
    for match in _SLOT.finditer(template):
        literal = template[cursor : match.start()]
        parts.append(literal)
        pos += len(literal)
        slot = match.group(1)
        value = values[slot]
        entity = SLOT_ENTITY.get(slot)
        if entity is not None:
            spans.append(Span(field, pos, pos + len(value), entity, value))
        parts.append(value)
        pos += len(value)
        cursor = match.end()
    parts.append(template[cursor:])
    return "".join(parts), spans


def join_rendered(pieces: list[tuple[str, list[Span]]], sep: str = " ") -> tuple[str, list[Span]]:
    """Joins rendered pieces with ``sep``, shifting their spans."""
    text_parts: list[str] = []
    spans: list[Span] = []
    offset = 0
    for i, (text, piece_spans) in enumerate(pieces):
        if i:
            text_parts.append(sep)
            offset += len(sep)
        spans.extend(Span(s.field, s.start + offset, s.end + offset, s.entity_type, s.value) for s in piece_spans)
        text_parts.append(text)
        offset += len(text)
    return "".join(text_parts), spans


class Generator:
    """Draws customers and tickets from one seeded random stream (plus seeded Fakers)."""

    def __init__(self, cfg: SynthesizeParams) -> None:
        from faker import Faker

        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.shown: set[str] = set()  # the attributes the last message shows (see message())
        locales = sorted({loc for locs in REGION_LOCALES.values() for loc in locs})
        self.fakers: dict[str, Any] = {}
        for i, loc in enumerate(locales):
            fake = Faker(loc)
            fake.seed_instance(cfg.seed * 1000 + i)
            self.fakers[loc] = fake
        self._used_ids: set[str] = set()

    def _unique(self, prefix: str, digits: int) -> str:
        while True:
            value = f"{prefix}{self.rng.randrange(10 ** (digits - 1), 10**digits)}"
            if value not in self._used_ids:
                self._used_ids.add(value)
                return value

    def _phone(self, locale: str) -> str:
        r = self.rng
        if locale == "en_US" or r.random() < 0.3:
            area, exch, line = r.choice(US_AREA_CODES), r.randrange(201, 999), r.randrange(1000, 9999)
            fmt = r.choice(("({a}) {e}-{l}", "{a}-{e}-{l}", "+1 {a} {e} {l}", "{a}.{e}.{l}", "+1-{a}-{e}-{l}"))
            return fmt.format(a=area, e=exch, l=line)
        code = COUNTRY_PHONE[locale]
        if locale == "en_GB":
            return f"{code} 20 {r.randrange(7000, 8999)} {r.randrange(1000, 9999)}"
        if locale == "en_IN":
            return f"{code} {r.randrange(70000, 99999)} {r.randrange(10000, 99999)}"
        if locale == "es_MX":
            return f"{code} 55 {r.randrange(1000, 9999)} {r.randrange(1000, 9999)}"
        if locale == "de_DE":
            return f"{code} 30 {r.randrange(1000000, 9999999)}"
        return f"{code} 1 {r.randrange(10, 99)} {r.randrange(10, 99)} {r.randrange(10, 99)} {r.randrange(10, 99)}"

    def _card(self, fake: Any) -> str:
        number = fake.credit_card_number(card_type=self.rng.choice(("visa16", "mastercard", "amex", "discover")))
        style = self.rng.random()
        if style < 0.4 or len(number) != 16:
            return number
        groups = [number[i : i + 4] for i in range(0, 16, 4)]
        return (" " if style < 0.75 else "-").join(groups)

    def _iban(self, locale: str) -> str:
        """A valid IBAN (ISO 13616 check digits) of the customer's country, or a common one."""
        r = self.rng
        country = IBAN_COUNTRY.get(locale) or r.choice(sorted(IBAN_BBAN))
        letters, digits = IBAN_BBAN[country]
        bban = "".join(r.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(letters))
        bban += "".join(r.choice("0123456789") for _ in range(digits))
        numeric = "".join(str(int(ch, 36)) for ch in bban + country + "00")
        iban = f"{country}{98 - int(numeric) % 97:02d}{bban}"
        if r.random() < 0.5:
            return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
        return iban

    def _ssn(self) -> str:
        fake = self.fakers["en_US"]
        ssn = fake.ssn()
        return ssn if self.rng.random() < 0.85 else ssn.replace("-", " ")

    def _email(self, first: str, last: str, fake: Any) -> str:
        import unicodedata

        def ascii_of(s: str) -> str:
            return unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode().lower().replace(" ", "")

        given, family = ascii_of(first) or "user", ascii_of(last) or "mail"
        local = self.rng.choice(
            (f"{given}.{family}", f"{given[0]}{family}", f"{given}{self.rng.randrange(1, 99)}", f"{family}.{given}")
        )
        domain = self.rng.choice(
            ("gmail.com", "outlook.com", "yahoo.com", "proton.me", fake.free_email_domain(), fake.domain_name())
        )
        return f"{local}@{domain}"

    def customer(self) -> Customer:
        """Draws one customer with consistent PII and attributes."""
        r = self.rng
        gender = r.choices(GENDERS, weights=(0.48, 0.48, 0.04))[0]
        age_band = r.choices(AGE_BANDS, weights=(0.22, 0.3, 0.28, 0.2))[0]
        region = r.choices(REGIONS, weights=(0.4, 0.3, 0.15, 0.15))[0]
        locale = r.choice(REGION_LOCALES[region])
        fake = self.fakers[locale]
        first = {"female": fake.first_name_female, "male": fake.first_name_male}.get(gender, fake.first_name)()
        last = fake.last_name()
        lo, hi = AGE_RANGES[age_band]
        age = r.randint(lo, hi)
        start = dt.date.fromisoformat(self.cfg.start_date)
        born = start - dt.timedelta(days=age * 365 + r.randrange(0, 365))
        dob = born.strftime(r.choice(("%m/%d/%Y", "%B %d, %Y", "%Y-%m-%d", "%d.%m.%Y")))
        address = fake.address().replace("\n", ", ")
        ip = fake.ipv4_public() if r.random() < 0.85 else fake.ipv6()
        return Customer(
            customer_id=self._unique("CUST-", 6), locale=locale, gender=gender, age_band=age_band, age=age,
            region=region, first=first, last=last, email=self._email(first, last, fake),
            phone=self._phone(locale), address=address, card=self._card(fake), iban=self._iban(locale),
            ssn=self._ssn(), ip=ip, dob=dob, account=self._unique("ACCT-", 7),
        )  # fmt: skip

    def _values(self, c: Customer, agent: tuple[str, str]) -> dict[str, str]:
        r = self.rng
        return {
            "name": f"{c.first} {c.last}", "first": c.first, "last": c.last, "email": c.email,
            "phone": c.phone, "address": c.address, "card": c.card, "iban": c.iban, "ssn": c.ssn,
            "ip": c.ip, "dob": c.dob, "account": c.account, "agent": agent[0], "emp": agent[1],
            "order": f"ORD-{r.randrange(10**7, 10**8)}", "product": r.choice(PRODUCTS),
            "amount": f"${r.randrange(5, 900)}.{r.randrange(0, 100):02d}", "device": r.choice(DEVICES),
            "days": str(r.randrange(3, 30)), "hon": HONORIFIC[c.gender], "age": str(c.age),
        }  # fmt: skip

    def message(self, c: Customer, category: str, priority: str, values: dict[str, str]) -> tuple[str, list[Span]]:
        """Builds the customer's message: greeting, problem, signals, urgency, contact, sign-off."""
        r = self.rng
        pieces = []
        if r.random() < 0.6:
            pieces.append(render(r.choice(GREETINGS), values, "message"))
        pieces.append(render(r.choice(MESSAGE_TEMPLATES[category]), values, "message"))
        signals = []
        self.shown = set()
        if r.random() < 0.6:
            signals.append(r.choice(GENDER_SIGNALS[c.gender]))
            self.shown.add("gender")
        if r.random() < 0.5:
            signals.append(r.choice(AGE_SIGNALS[c.age_band]))
            self.shown.add("age_band")
        r.shuffle(signals)
        pieces.extend(render(s, values, "message") for s in signals)
        pieces.append(render(r.choice(PRIORITY_PHRASES[priority]), values, "message"))
        if r.random() < 0.4:
            pieces.append(render(r.choice(CONTACT_LINES), values, "message"))
        if r.random() < 0.5:
            pieces.append(render(r.choice(SIGNOFFS), values, "message"))
        return join_rendered(pieces)

    def reply(self, category: str, values: dict[str, str]) -> tuple[str, list[Span]]:
        """Builds the agent's reply: opener, resolution, closer with the agent's name and id."""
        r = self.rng
        pieces = [
            render(r.choice(REPLY_OPENERS), values, "reply"),
            render(r.choice(REPLY_TEMPLATES[category]), values, "reply"),
            render(r.choice(REPLY_CLOSERS), values, "reply"),
        ]
        return join_rendered(pieces)


def biased_labels(
    category: str,
    priority: str,
    customer: Customer,
    cfg: SynthesizeParams,
    rng: random.Random,
    shown: set[str] | frozenset[str] = frozenset(),
) -> tuple[str, str]:
    """Applies the injected label bias to ``(category, priority)``: for a ticket of the group, the
    priority is lowered (``target: priority``) or a ``route_from`` ticket (``any``: every ticket)
    is labelled ``route_to`` (``target: category``; its text stays what it was). With
    ``visible_only``, only tickets whose message shows the attribute (``shown``) are biased. One
    draw per ticket either way."""
    bias = cfg.label_bias
    hit = rng.random() < bias.strength
    if not (hit and getattr(customer, bias.attribute) == bias.group):
        return category, priority
    if bias.visible_only and bias.attribute not in shown:
        return category, priority
    if bias.target == "category":
        return (bias.route_to if bias.route_from in (category, "any") else category), priority
    return category, PRIORITIES[max(0, PRIORITIES.index(priority) - bias.levels)]


def check_routes(cfg: SynthesizeParams) -> None:
    """Refuses a routing bias between names that are no categories (a typo would bias nothing)."""
    bias = cfg.label_bias
    for key, allowed in (("route_from", (*CATEGORIES, "any")), ("route_to", CATEGORIES)):
        if getattr(bias, key) not in allowed:
            raise GovtuneError(
                f"params.yaml: synthesize.label_bias.{key}", f"{getattr(bias, key)!r} is no category",
                f"use one of {', '.join(allowed)}",
            )  # fmt: skip


def generate(cfg: SynthesizeParams, shift: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Generates the tickets and the PII sidecar (``shift``: a drifted batch, see SHIFT_*).

    Returns:
        ``(tickets, spans)``: ticket records in ``COLUMNS`` order, sorted by time; span records
        ``{ticket_id, field, start, end, entity_type, value}``.
    """
    check_routes(cfg)
    gen = Generator(cfg)
    r = gen.rng
    n_customers = max(1, math.ceil(cfg.rows / cfg.tickets_per_customer))
    customers = [gen.customer() for _ in range(n_customers)]
    agents = [
        (f"{gen.fakers['en_US'].first_name()} {gen.fakers['en_US'].last_name()}", gen._unique("EMP-", 5))
        for _ in range(25)
    ]
    start = dt.datetime.fromisoformat(cfg.start_date).replace(tzinfo=dt.UTC)
    # Heavy-tailed: a few customers write many tickets, most write one or two.
    weights = [r.paretovariate(3.0) for _ in customers]
    drawn = []
    for _ in range(cfg.rows):
        customer = r.choices(customers, weights=weights)[0]
        when = start + dt.timedelta(seconds=r.randrange(cfg.days * 86_400))
        drawn.append((when, customer))
    drawn.sort(key=lambda item: item[0])
    ticket_numbers = sorted(r.sample(range(1_000_000, 9_999_999), cfg.rows))

    tickets: list[dict[str, Any]] = []
    spans: list[dict[str, Any]] = []
    for number, (when, c) in zip(ticket_numbers, drawn, strict=True):
        category = (
            r.choices(CATEGORIES, weights=[SHIFT_CATEGORY_WEIGHTS[k] for k in CATEGORIES])[0]
            if shift
            else r.choice(CATEGORIES)
        )
        priority = r.choices(PRIORITIES, weights=PRIORITY_WEIGHTS[category])[0]
        values = gen._values(c, r.choice(agents))
        if shift:
            values.update(product=r.choice(SHIFT_PRODUCTS), account=f"AC/{c.account[5:7]}-{c.account[7:]}")
        message, message_spans = gen.message(c, category, priority, values)
        reply, reply_spans = gen.reply(category, values)
        ticket_id = f"TCK-{number}"
        channel = r.choice(CHANNELS)
        category_label, priority_label = biased_labels(category, priority, c, cfg, r, gen.shown)
        tickets.append({
            "ticket_id": ticket_id, "customer_id": c.customer_id,
            "created_at": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "channel": channel,
            "message": message, "reply": reply, "category": category_label,
            "priority": priority_label,
            "gender": c.gender, "age_band": c.age_band, "region": c.region,
        })  # fmt: skip
        spans.extend(
            {"ticket_id": ticket_id, "field": s.field, "start": s.start, "end": s.end,
             "entity_type": s.entity_type, "value": s.value}
            for s in message_spans + reply_spans
        )  # fmt: skip
    inject_defects(tickets, spans, cfg, r)
    return tickets, spans


def inject_defects(
    tickets: list[dict[str, Any]], spans: list[dict[str, Any]], cfg: SynthesizeParams, rng: random.Random
) -> None:
    """Injects the configured defects in place (nulls, duplicates, over-long messages)."""
    d = cfg.defects
    if not (d.null_rate or d.duplicate_rate or d.overlong_rate):
        return
    nulled = set()
    for t in tickets:
        if rng.random() < d.null_rate:
            t["message"] = None
            nulled.add(t["ticket_id"])
        elif rng.random() < d.overlong_rate:
            t["message"] += " " + FILLER * (OVERLONG_CHARS // len(FILLER) + 1)
    spans[:] = [s for s in spans if not (s["field"] == "message" and s["ticket_id"] in nulled)]
    duplicates = [dict(t) for t in tickets if rng.random() < d.duplicate_rate]
    for dup in duplicates:
        tickets.insert(rng.randrange(len(tickets) + 1), dup)


def save_dataset(
    tickets: list[dict[str, Any]], spans: list[dict[str, Any]], tickets_path: Path, spans_path: Path
) -> None:
    """Writes both files atomically (spans first: tickets are the files other tools look for)."""
    save_jsonl(spans_path, spans)
    save_jsonl(tickets_path, tickets)


def main(argv: list[str] | None = None) -> None:
    """Generates the dataset from ``params.yaml`` ``synthesize``, with optional overrides."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.synthesize", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, help="override synthesize.rows")
    parser.add_argument("--seed", type=int, help="override synthesize.seed")
    parser.add_argument("--bias-strength", type=float, help="override synthesize.label_bias.strength")
    parser.add_argument("--bias-levels", type=int, help="override synthesize.label_bias.levels")
    parser.add_argument("--bias-target", choices=("priority", "category"), help="override synthesize.label_bias.target")
    parser.add_argument(
        "--bias-attribute", choices=("gender", "age_band", "region"), help="override synthesize.label_bias.attribute"
    )
    parser.add_argument("--bias-group", help="override synthesize.label_bias.group")
    parser.add_argument("--bias-route-from", help="override synthesize.label_bias.route_from (a category or `any`)")
    parser.add_argument("--bias-route-to", help="override synthesize.label_bias.route_to")
    parser.add_argument(
        "--bias-visible-only", action="store_true", default=None, help="set synthesize.label_bias.visible_only"
    )
    parser.add_argument("--out-dir", type=Path, help="write here instead of the data.raw paths (same file names)")
    parser.add_argument(
        "--shift", action="store_true", help="a drifted batch: other category mix, new products, new account-id format"
    )
    args = parser.parse_args(argv)
    params = load_params()
    cfg = params.synthesize
    overrides: dict[str, Any] = {k: v for k, v in (("rows", args.rows), ("seed", args.seed)) if v is not None}
    bias = {
        k: v
        for k, v in (("strength", args.bias_strength), ("levels", args.bias_levels), ("target", args.bias_target),
                     ("attribute", args.bias_attribute), ("group", args.bias_group),
                     ("route_from", args.bias_route_from), ("route_to", args.bias_route_to),
                     ("visible_only", args.bias_visible_only))
        if v is not None
    }  # fmt: skip
    if bias:
        overrides["label_bias"] = cfg.label_bias.model_dump() | bias
    # Re-validate so overrides get the same bounds checks as params.yaml.
    cfg = SynthesizeParams.model_validate({**cfg.model_dump(), **overrides})
    tickets_path, spans_path = params.data.raw, params.data.raw_pii_spans
    if args.out_dir is not None:
        tickets_path, spans_path = args.out_dir / tickets_path.name, args.out_dir / spans_path.name
    tickets, spans = generate(cfg, shift=args.shift)
    save_dataset(tickets, spans, tickets_path, spans_path)
    log.info("wrote %d tickets to %s and %d PII spans to %s", len(tickets), tickets_path, len(spans), spans_path)


if __name__ == "__main__":
    run_main(main)
