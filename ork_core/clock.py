"""The time schedules are computed in: the real one, or a faster one for trying schedules out.

``ORK_CLOCK=START*SPEED@ORIGIN`` makes the clock show epoch second START at real epoch second
ORIGIN and run SPEED times as fast (ORIGIN defaults to when the process started; give it when
several processes — `ork scheduler`, `ork unpause` — must agree, as tests do).
``ORK_CLOCK=1796169600*60`` shows a day of ``@hourly`` ticks in 24 minutes. Only decisions
about ticks use it; the timestamps of runs and tasks stay real.
"""

from __future__ import annotations

import math
import os
import time

from ork_core.errors import OrkError


class Clock:
    def __init__(self, spec: str | None = None) -> None:
        self.origin, self.start, self.speed = time.time(), time.time(), 1.0
        if spec:
            head, _, origin = spec.partition("@")
            start, _, speed = head.partition("*")
            try:
                self.start, self.speed = float(start), float(speed or 1)
                if origin:
                    self.origin = float(origin)
            except ValueError:
                raise OrkError(f"ORK_CLOCK={spec!r}: write START*SPEED or START*SPEED@ORIGIN in epoch seconds, "
                               "e.g. 1796169600*60") from None
            if not all(math.isfinite(v) for v in (self.start, self.speed, self.origin)) or self.speed <= 0:
                raise OrkError(f"ORK_CLOCK={spec!r}: the numbers must be finite, SPEED above 0")

    @classmethod
    def from_env(cls) -> Clock:
        return cls(os.environ.get("ORK_CLOCK"))

    def now(self) -> float:
        return self.start + (time.time() - self.origin) * self.speed

    def seconds_until(self, ts: float) -> float:
        """Real seconds until the clock shows `ts`."""
        return max(0.0, (ts - self.now()) / self.speed)


__all__ = ["Clock"]
