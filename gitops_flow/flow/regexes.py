"""Authors' regular expressions (a test's ``expect.matches``) on RE2: linear time in the text, whatever the pattern.

Python's ``re`` backtracks: a pattern such as ``^(a+)+$`` against ``"a" * 34 + "!"`` runs for minutes while holding
the interpreter's lock, so nothing else in the process runs. RE2 (google-re2) never backtracks; the price is that it
refuses backreferences and lookaround, which validation reports (``unsupported-regex``) before anything runs.
"""

from __future__ import annotations

import re
from typing import Any

import re2

MAX_PROGRAM = 1 << 16  # RE2's bound on a compiled pattern's size (a repetition such as a{1000}{1000} is refused)


class PatternError(ValueError):
    """A pattern that cannot be used; ``code`` is the problem code: ``bad-regex`` (not a regular expression at
    all) or ``unsupported-regex`` (a regular expression RE2 does not run: a backreference, a lookaround)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # the error is reported as a problem; RE2 would also print it to stderr
    options.max_mem = MAX_PROGRAM * 128
    return options


def compile_pattern(pattern: str) -> Any:
    """``pattern`` compiled by RE2; raises PatternError naming why it cannot be."""
    try:
        return re2.compile(pattern, options=_options())
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
    try:
        re.compile(pattern)
    except re.error as exc:
        raise PatternError("bad-regex", f"'matches' is not a regular expression: {exc}") from None
    raise PatternError(
        "unsupported-regex",
        f"'matches' uses what the linear-time engine (RE2) does not run ({reason}): backreferences and lookarounds "
        "are not supported",
    )


def search(pattern: str, text: str) -> bool:
    """Whether ``pattern`` (checked by compile_pattern) is found in ``text``, in time linear in ``text``."""
    return compile_pattern(pattern).search(text) is not None
