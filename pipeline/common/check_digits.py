"""Check digits that tell a real identifier from a run of digits: Luhn (cards), ISO 13616 (IBANs)."""

from __future__ import annotations

import re


def luhn_ok(text: str) -> bool:
    """Luhn check of the digits in ``text`` (credit-card numbers)."""
    digits = [int(c) for c in text if c.isdigit()][::-1]
    if len(digits) < 12:
        return False
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(digits))
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    """ISO 13616 mod-97 check of an IBAN (spaces ignored)."""
    s = text.replace(" ", "").upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{10,30}", s):
        return False
    return int("".join(str(int(c, 36)) for c in s[4:] + s[:4])) % 97 == 1
