"""Task ids revoked before the scheduler knew them, each until its TTL runs out."""

from __future__ import annotations

from celeriac.scheduler.outbox import JournalOps


class Revocations:
    """``until`` maps an id to when its revocation lapses, oldest first.

    Every revocation lives equally long, so insertion order is expiry order:
    expiring stops at the first live one, and past ``max_revoked`` the
    oldest goes.  Journaled, so a revocation survives a restart.
    """

    def __init__(self, ttl: float, max_revoked: int, journal: JournalOps) -> None:
        self.until: dict[str, float] = {}
        self._ttl = ttl
        self._max = max_revoked
        self._journal = journal

    def __contains__(self, key: str) -> bool:
        return key in self.until

    def __len__(self) -> int:
        return len(self.until)

    def remember(self, key: str, now: float) -> None:
        """Revoke ``key`` before it is known (until its TTL; the oldest go first when full)."""
        if len(self.until) >= self._max:
            oldest = next(iter(self.until))
            del self.until[oldest]
            self._journal.record("revoked", oldest, None)
        self.until.pop(key, None)  # re-insert at the end: the dict stays in expiry order
        until = now + self._ttl
        self.until[key] = until
        self._journal.record("revoked", key, until)

    def expire(self, now: float) -> None:
        """Drop revocations past their TTL: the oldest come first, so this stops early."""
        while self.until:
            key, until = next(iter(self.until.items()))
            if until > now:
                return
            del self.until[key]
            self._journal.record("revoked", key, None)

    def restore(self, saved: dict[str, float], now: float) -> None:
        """Revocations from the journal that still hold, put back in expiry order."""
        for key, until in sorted(saved.items(), key=lambda item: item[1]):
            if until > now:
                self.until[key] = until
