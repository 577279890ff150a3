"""Names fitted to a destination's rules (character sets, lengths), each change logged once.

Part of the delivery toolkit every destination shares; importable as
``zibrato.delivery.NameFitter`` too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from .runtime import printable_repr

_MAX_REMEMBERED_NAMES = 100_000


class NameFitter:
    """Fits names to a destination's rules, caching each answer; each changed name is logged once.

    ``fit(text, limit)`` returns the fitted text; the default replaces every
    character ``invalid`` matches with ``_`` and truncates to ``limit``. The
    cache is bounded (cleared past 100,000 names).
    """

    def __init__(
        self,
        log: logging.Logger,
        rule: str,
        invalid: re.Pattern[str] | None = None,
        fit: Callable[[str, int | None], str] | None = None,
        destination: str = "the destination",
    ) -> None:
        if fit is None and invalid is None:
            raise ValueError("give a pattern of invalid characters or a fit function")
        self.log, self.rule, self.destination = log, rule, destination

        def replace_invalid(text: str, limit: int | None) -> str:
            assert invalid is not None  # one of the two is given, checked above
            return invalid.sub("_", text)[:limit]

        self._fit = fit or replace_invalid
        self.changed = 0
        self._seen: dict[tuple[str, str, int | None], str] = {}

    def __call__(self, text: str, limit: int | None = None, kind: str = "name") -> str:
        key = (kind, text, limit)
        fixed = self._seen.get(key)
        if fixed is None:
            fixed = self._fit(text, limit)
            if len(self._seen) >= _MAX_REMEMBERED_NAMES:
                self._seen.clear()
            self._seen[key] = fixed
            if fixed != text:
                self.changed += 1
                self.log.warning(
                    "%s %s does not fit %s's rules (%s): sent as %s",
                    kind,
                    printable_repr(text),
                    self.destination,
                    self.rule,
                    printable_repr(fixed),
                )
        return fixed


__all__ = ["NameFitter"]
