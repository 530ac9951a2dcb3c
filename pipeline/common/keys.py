"""The pseudonymisation key and the keyed hashes made with it.

Every identifier the scrub replaces becomes ``HMAC(key, entity, value)``: the same value gives
the same tag in every record, and nobody without the key can reverse or recompute it. Erasure
requests record only such a hash; an identifier column's pseudonym is its first 12 hex digits.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.common.errors import GovtuneError
from pipeline.common.policy import PiiPolicy

# A public, fixed key for demos and tests. A run that uses it is marked "demo key" in the
# report; the policy must allow it explicitly (key.allow_demo_key).
DEMO_KEY = b"govtune-demo-pseudonym-key--public--not-a-secret"


@dataclass(frozen=True)
class PseudonymKey:
    """The HMAC key and where it came from (``env``, ``file`` or ``demo``); never printed."""

    secret: bytes
    source: str

    def __repr__(self) -> str:  # keep the secret out of tracebacks and logs
        return f"PseudonymKey(source={self.source!r})"

    @property
    def fingerprint(self) -> str:
        """A short, non-reversible id of the key, so reports can show which key was used."""
        return hmac.new(self.secret, b"govtune-key-fingerprint", hashlib.sha256).hexdigest()[:16]


def load_key(policy: PiiPolicy, policy_path: Path, repo_root: Path) -> PseudonymKey:
    """Reads the pseudonymisation key from the environment or a key file outside the repo.

    Raises:
        GovtuneError: no key and the demo key is not allowed, an empty key, or a key file
            inside the repository (it would end up in git or DVC).
    """
    value = os.environ.get(policy.key.env, "")
    if value:
        return PseudonymKey(value.encode("utf-8"), "env")
    if policy.key.file is not None:
        path = policy.key.file.expanduser().resolve()
        if path.is_relative_to(repo_root.resolve()):
            raise GovtuneError(
                f"{policy_path}: key.file",
                "the key file lies inside the repository",
                "move it outside the repository and point key.file at it",
            )
        if not path.is_file():
            raise GovtuneError(
                f"{policy_path}: key.file", f"key file {path} not found", f"create it, or set {policy.key.env}"
            )
        secret = path.read_bytes().strip()
        if not secret:
            raise GovtuneError(
                f"{policy_path}: key.file",
                f"key file {path} is empty",
                "write a random key into it (e.g. `openssl rand -hex 32`)",
            )
        return PseudonymKey(secret, "file")
    if policy.key.allow_demo_key:
        return PseudonymKey(DEMO_KEY, "demo")
    raise GovtuneError(
        f"{policy_path}: key",
        f"no pseudonymisation key: {policy.key.env} is not set and key.file is null",
        f"export {policy.key.env}=<random secret> (e.g. `openssl rand -hex 32`), or set key.file",
    )


def keyed_digest(key: PseudonymKey, entity: str, value: str) -> str:
    """HMAC-SHA256 of a normalised value, scoped by entity type (hex)."""
    normalised = " ".join(value.split()).casefold()
    return hmac.new(key.secret, f"{entity}\x1f{normalised}".encode(), hashlib.sha256).hexdigest()


def identifier_digest(key: PseudonymKey, column: str, value: Any) -> str:
    """Keyed hash of an identifier column's value (erasure requests record this, never the value)."""
    return keyed_digest(key, column.upper(), str(value))


def identifier_pseudonym(column: str, digest: str) -> str:
    """The scrubbed data's pseudonym for that hash: ``CUSTOMER-P<12 hex>`` for ``customer_id``."""
    return f"{column.split('_')[0].upper()}-P{digest[:12]}"


def pseudonym(key: PseudonymKey, entity: str, value: str) -> str:
    """A consistent surrogate: the same value (and key) always gives the same tag."""
    return f"<{entity}_{keyed_digest(key, entity, value)[:10]}>"
