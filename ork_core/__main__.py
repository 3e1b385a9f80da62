"""``python -m ork_core`` is ``ork``."""

from ork_core.cli import entry

entry()
