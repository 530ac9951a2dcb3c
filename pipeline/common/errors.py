"""The one error type stages raise for problems a user can fix.

A :class:`GovtuneError` names where the problem is (file, line or key) and what to do. The
CLI and every ``main()`` print it without a traceback and exit non-zero. Messages must never
carry raw record content or PII values: use record ids, counts and hashes.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

EXIT_USER_ERROR = 2


class GovtuneError(Exception):
    """A problem with the inputs, params or policies that the user can fix.

    Args:
        where: the file (with ``:line``) or ``file: key`` the problem is in.
        what: what is wrong.
        fix: what to do about it.
    """

    def __init__(self, where: str, what: str, fix: str) -> None:
        self.where, self.what, self.fix = where, what, fix
        super().__init__(f"{where}: {what}\n  fix: {fix}")


def run_main(main: Callable[[], object]) -> None:
    """Runs a stage's ``main`` with logging set up; a GovtuneError exits 2 with its message."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        main()
    except GovtuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
