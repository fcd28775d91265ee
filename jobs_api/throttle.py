"""Wrong download passwords, counted per client address in Redis: after too many within
the window, that address gets 429 until the window ends, before any password is hashed.

Each try is counted before its password is hashed, in one atomic step, and given back if the
password was right: many guesses at once cannot all pass a check made before any of them is
recorded, and every guess past the limit is refused without the CPU of a hash."""
from __future__ import annotations

from redis import Redis

from jobs_api.errors import TooManyRequests

WINDOW_SECONDS = 600


class PasswordFailures:
    def __init__(self, redis: Redis, limit: int) -> None:
        self.redis, self.limit = redis, limit

    def _key(self, address: str) -> str:
        return f"jobs-api:password-failures:{address}"

    def take(self, address: str) -> None:
        """Count a try from `address`, or 429 if it has used up its tries."""
        if not self.limit:
            return
        key = self._key(address)
        with self.redis.pipeline() as pipe:  # MULTI/EXEC: the count and its expiry together
            pipe.incr(key)
            pipe.expire(key, WINDOW_SECONDS, nx=True)
            tries, _ = pipe.execute()
        if tries > self.limit:
            wait = int(self.redis.ttl(key))
            raise TooManyRequests("Too many wrong download passwords from this address; try again later.",
                                  wait if wait > 0 else WINDOW_SECONDS)

    def give_back(self, address: str) -> None:
        """The try was right: it does not count."""
        if self.limit:
            self.redis.decr(self._key(address))
