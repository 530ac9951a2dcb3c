"""`pip check` for `make setup`, minus the model packages of requirements-models.txt.

Those are installed with ``--no-deps`` on purpose (only the files they ship are used), so once
they are in the venv, a plain ``pip check`` reports their declared runtime deps as missing and
a re-run of ``make setup`` (after a change to pyproject.toml or a lock) would fail. Every other
problem still fails the set-up.

Run: ``.venv/bin/python scripts/pip_check.py``
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

MODELS = Path(__file__).resolve().parents[1] / "requirements-models.txt"


def no_deps_packages(text: str) -> set[str]:
    """Normalised names of the packages pinned in requirements-models.txt."""
    names = {m.group(1) for line in text.splitlines() if (m := re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)==", line))}
    return {re.sub(r"[-_.]+", "-", n).lower() for n in names}


def problems(report: str, ignored: set[str]) -> list[str]:
    """The lines of `pip check` output that are not about an ignored package's own requirements."""
    out = []
    for line in report.splitlines():
        first = re.sub(r"[-_.]+", "-", line.split(" ", 1)[0]).lower()
        if line.strip() and first not in ignored and not line.startswith("No broken requirements"):
            out.append(line)
    return out


def main() -> int:
    proc = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, check=False)
    left = problems(proc.stdout + proc.stderr, no_deps_packages(MODELS.read_text(encoding="utf-8")))
    for line in left:
        print(line, file=sys.stderr)
    print("pip check: ok" if not left else f"pip check: {len(left)} problem(s)")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
