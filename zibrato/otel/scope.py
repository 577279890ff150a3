"""What an instrument reads from the meter that made it, as a structural type.

The instruments (:mod:`.synchronous`, :mod:`.observable`) need four of the
provider's settings and the meter's base tags; naming them here rather than
importing :class:`.provider.Meter` keeps the provider the one module that
knows every instrument, with no import circle back to it.
"""

from __future__ import annotations

from typing import Protocol

from ..client import Zibrato
from .series import Figures


class ProviderSettings(Protocol):
    """The provider's settings every instrument of it shares."""

    @property
    def client(self) -> Zibrato: ...

    @property
    def level(self) -> str: ...

    @property
    def figures_(self) -> Figures: ...

    @property
    def cardinality_limit(self) -> int: ...


class InstrumentScope(Protocol):
    """The meter an instrument is made by: its provider and the tags of its scope."""

    @property
    def provider(self) -> ProviderSettings: ...

    @property
    def base_tags(self) -> tuple[str, ...]: ...
