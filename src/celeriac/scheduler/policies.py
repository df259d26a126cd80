"""Pure policies: retry back-off and cluster-wide rate limits."""

from __future__ import annotations

import random
from dataclasses import dataclass

from celeriac.wire.protocol import parse_rate

#: Epoch seconds as floats are spaced ~0.2 µs apart: a refill computed from
#: them can land a hair under a whole token.  Shorter waits are rounding.
_CLOCK_RESOLUTION = 1e-6


def backoff_delay(
    attempt: int, *, base: float = 1.0, cap: float = 600.0, jitter: bool = True, rng: random.Random
) -> float:
    """Exponential back-off for retry number ``attempt`` (1, 2, ...), capped.

    With jitter, a uniform draw in [0, delay] ("full jitter"), so a burst of
    failures does not retry in lockstep.
    """
    delay = min(cap, base * 2 ** min(max(0, attempt - 1), 64))
    return rng.uniform(0, delay) if jitter else delay


@dataclass
class TokenBucket:
    """A token bucket: ``rate`` tokens per ``per`` seconds, holding at most ``rate``."""

    rate: float  # tokens per `per` seconds
    per: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """Take a token: 0.0 if one was there, else seconds until one will be."""
        refill = (now - self.updated) * self.rate / self.per
        self.tokens = min(self.rate, self.tokens + max(0.0, refill))
        self.updated = now
        wait = (1.0 - self.tokens) * self.per / self.rate
        if wait < _CLOCK_RESOLUTION:
            self.tokens = max(0.0, self.tokens - 1.0)
            return 0.0
        return wait


class RateLimits:
    """One bucket per task name, shared by every worker: the limit is cluster-wide."""

    def __init__(self) -> None:
        self._buckets: dict[str, TokenBucket] = {}

    def wait_time(self, name: str, limit: str, now: float) -> float:
        """Seconds until a task ``name`` may start under ``limit`` (``"10/s"``); 0: now."""
        rate, per = parse_rate(limit)
        bucket = self._buckets.get(name)
        if bucket is None or (bucket.rate, bucket.per) != (rate, per):
            # Start with a single token, not a full bucket: no burst at start-up.
            bucket = self._buckets[name] = TokenBucket(rate, per, 1.0, now)
        return bucket.take(now)
