"""A request body under gunicorn, read from the client's socket into the caller's buffer.

Fenced cleverness: gunicorn's own body reader copies each megabyte of an upload several times
on its way to the multipart parser (bench/RESULTS.md). This reads past it, and so relies on
gunicorn's internals as of gunicorn 22 to 27: the body's `reader` with its `length` and
`unreader` (`take_buffered`, `unread`), its `buf` (an io.BytesIO), its `failed` flag, and the
`gunicorn.socket` environ key. Where any of them is missing, `SocketBody.over` answers None and
the plain reader is used; `GUNICORN_BODY_READER=0` uses it always. CI runs the suite once that way.
"""
from __future__ import annotations

import io
from typing import Any

from jobs_api.config import fence_on

SWITCH = "GUNICORN_BODY_READER"


class SocketBody(io.RawIOBase):
    """A request body under gunicorn, read from the client's socket into the caller's buffer.

    Whatever gunicorn has read ahead comes first, and what is not used stays with it. Its
    own reader is kept told how much of the body is left, so that after the response it
    drains only what the application did not read, and a failed read marks the
    connection unusable: the next request on it stays where gunicorn expects it."""

    def __init__(self, body: Any, sock: Any, length: int) -> None:
        self.body, self.sock, self.left = body, sock, length

    @classmethod
    def over(cls, body: Any, sock: Any, length: int) -> SocketBody | None:
        """The fast reader if `body` is gunicorn's untouched body of `length` bytes on `sock`."""
        if not fence_on(SWITCH):
            return None
        reader = getattr(body, "reader", None)
        unreader = getattr(reader, "unreader", None)
        buffered = getattr(body, "buf", None)
        if (sock is None or getattr(reader, "length", None) != length or not hasattr(unreader, "take_buffered")
                or not hasattr(unreader, "unread") or not isinstance(buffered, io.BytesIO) or buffered.tell()):
            return None
        return cls(body, sock, length)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self.left)
        if not want:
            return 0
        unreader = self.body.reader.unreader
        try:
            ahead = unreader.take_buffered()
            if ahead:
                count = min(want, len(ahead))
                buffer[:count] = ahead[:count]
                unreader.unread(ahead[count:])
            else:
                count = self.sock.recv_into(buffer, want)
        except BaseException:
            self.body.failed = True
            raise
        if not count:
            self.body.failed = True  # the client went away mid-body
        self.left -= count
        self.body.reader.length = self.left
        return count
