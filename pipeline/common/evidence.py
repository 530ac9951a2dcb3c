"""The signed evidence manifest: sha256 of every artifact a decision rests on.

The report stage writes ``reports/evidence_manifest.json``: the files (data, splits, base
model, adapter, policies, params, environment lock, reports) with their sha256, the hash of the
previous manifest in the audit log (a chain across runs), and an Ed25519 signature over the
canonical JSON of all that. The key comes from ``$GOVTUNE_SIGNING_KEY`` (64 hex characters: the
private key's 32 raw bytes) or the file ``$GOVTUNE_SIGNING_KEY_FILE``; without one the manifest
is written unsigned and says so. ``govtune verify`` re-hashes every file, checks the signature
(against ``$GOVTUNE_SIGNING_PUBKEY`` when given: a manifest re-signed with another key fails),
the audit-log chain, and that this manifest is the one the log recorded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pipeline.common.errors import GovtuneError
from pipeline.common.io import sha256_bytes, sha256_file

KEY_ENV, KEY_FILE_ENV, PUBKEY_ENV = "GOVTUNE_SIGNING_KEY", "GOVTUNE_SIGNING_KEY_FILE", "GOVTUNE_SIGNING_PUBKEY"


def canonical(obj: Any) -> bytes:
    """The bytes that are hashed and signed: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def list_files(paths: list[Path], missing_ok: bool = False) -> dict[str, str | None]:
    """``{path: sha256}`` for each file, and each file under each directory, sorted.

    Args:
        paths: files and directories.
        missing_ok: map a missing path to None instead of raising.

    Raises:
        GovtuneError: a listed path does not exist (evidence is missing) and not ``missing_ok``.
    """
    out: dict[str, str | None] = {}
    for path in paths:
        path = Path(path)
        if path.is_dir():
            out.update({str(p): sha256_file(p) for p in sorted(path.rglob("*")) if p.is_file()})
        elif path.is_file():
            out[str(path)] = sha256_file(path)
        elif missing_ok:
            out[str(path)] = None
        else:
            raise GovtuneError(str(path), "evidence file is missing", "run `dvc repro` to produce it")
    return dict(sorted(out.items()))


def load_signing_key() -> Any | None:
    """The Ed25519 private key from the environment, or None (unsigned).

    Raises:
        GovtuneError: the variable is set but does not hold a valid key.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    raw = os.environ.get(KEY_ENV)
    if not raw and os.environ.get(KEY_FILE_ENV):
        try:
            raw = Path(os.environ[KEY_FILE_ENV]).read_text().strip()
        except OSError as exc:
            raise GovtuneError(
                f"${KEY_FILE_ENV}",
                f"cannot read the signing key file ({type(exc).__name__})",
                "point it at a readable file",
            ) from exc
    if not raw:
        return None
    try:
        return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(raw.strip()))
    except ValueError as exc:
        raise GovtuneError(f"${KEY_ENV}", "not an Ed25519 private key (expected 64 hex characters)",
                           "generate one: python -c 'import os; print(os.urandom(32).hex())'") from exc  # fmt: skip


def public_hex(key: Any) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def build_manifest(files: dict[str, str], prev: str | None, key: Any | None, created: str) -> dict[str, Any]:
    """The manifest body, its hash, and a signature (or ``signed: false``)."""
    body = {"created": created, "files": files, "prev_manifest": prev}
    manifest: dict[str, Any] = {**body, "manifest_hash": sha256_bytes(canonical(body))}
    if key is None:
        manifest["signature"] = {"signed": False, "note": f"unsigned: set ${KEY_ENV} or ${KEY_FILE_ENV} to sign"}
    else:
        manifest["signature"] = {"signed": True, "algorithm": "Ed25519", "public_key": public_hex(key),
                                 "value": key.sign(canonical(body)).hex()}  # fmt: skip
    return manifest


def verify_manifest(manifest: dict[str, Any], trusted_pubkey: str | None) -> list[str]:
    """Re-hashes every file and checks hash and signature; one line per problem."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    problems = []
    for path, expected in manifest.get("files", {}).items():
        if not Path(path).is_file():
            problems.append(f"{path}: missing")
        elif sha256_file(path) != expected:
            problems.append(f"{path}: changed (sha256 differs from the manifest)")
    body = {k: manifest.get(k) for k in ("created", "files", "prev_manifest")}
    if sha256_bytes(canonical(body)) != manifest.get("manifest_hash"):
        problems.append("manifest: its content does not match manifest_hash (the manifest was edited)")
    sig = manifest.get("signature", {})
    if not sig.get("signed"):
        if trusted_pubkey:  # a signature was expected
            problems.append("manifest: unsigned, but a trusted key was given")
        return problems
    if trusted_pubkey and sig.get("public_key") != trusted_pubkey:
        problems.append(
            f"manifest: signed with key {sig.get('public_key', '')[:16]}..., not the trusted key ${PUBKEY_ENV}"
        )
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(sig["public_key"])).verify(
            bytes.fromhex(sig["value"]), canonical(body)
        )
    except (InvalidSignature, ValueError, KeyError):
        problems.append("manifest: the signature does not verify (manifest or signature altered)")
    return problems
