"""Zibrato: application code in, production metrics out.

``from zibrato import Zibrato`` is all an application needs; importing does
no I/O and starts no thread (the first measurement starts the sender).
"""

from .client import Zibrato
from .instruments import Counter, Timer

__all__ = ["Zibrato", "Timer", "Counter", "__version__"]
__version__ = "1.0.0"
