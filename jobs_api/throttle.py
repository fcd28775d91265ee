"""Wrong download passwords, counted per client address in Redis: after too many within
the window, that address gets 429 until the window ends, before any password is hashed."""
from __future__ import annotations

from redis import Redis

from jobs_api.errors import TooManyRequests

WINDOW_SECONDS = 600


class PasswordFailures:
    def __init__(self, redis: Redis, limit: int) -> None:
        self.redis, self.limit = redis, limit

    def _key(self, address: str) -> str:
        return f"jobs-api:password-failures:{address}"

    def check(self, address: str) -> None:
        key = self._key(address)
        failures = int(self.redis.get(key) or 0)
        if self.limit and failures >= self.limit:
            wait = int(self.redis.ttl(key))
            raise TooManyRequests("Too many wrong download passwords from this address; try again later.",
                                  wait if wait > 0 else WINDOW_SECONDS)

    def record(self, address: str) -> None:
        key = self._key(address)
        with self.redis.pipeline() as pipe:
            pipe.incr(key)
            pipe.expire(key, WINDOW_SECONDS, nx=True)
            pipe.execute()
