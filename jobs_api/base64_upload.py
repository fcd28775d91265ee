"""The body of `upload-base64`, read as it arrives: one object `{content, filename}` or an array
of them, each file's base64 `content` decoded straight into a file, so a request holds a few
chunks in memory however large its files (parsing the body whole held it about 3.3 times over).

Only this shape is read, and read strictly: an unknown key, a value of the wrong type or JSON that
does not parse is a RequestInvalid naming the field, as the other bodies' parser answers.
"""
from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from jobs_api.errors import RequestInvalid
from jobs_api.storage import Incoming

CHUNK = 256 * 1024
MAX_NAME_BYTES = 4096  # a filename or a key, as JSON text
MAX_DATA_PREFIX = 1024  # "data:<media type>;base64," before a data: URI's content
NOT_SPACE = re.compile(rb"[^ \t\r\n]")
STRING_STOP = re.compile(rb'"|\\[^/]')  # a string's end, or an escape but \/
BASE64_RUN = re.compile(rb"([A-Za-z0-9+/]*)(=*)")


@dataclass
class Base64File:
    incoming: Incoming
    filename: str


class Base64Upload:
    """Reads the body from `stream` into files made by `new_file`; the caller removes them."""

    def __init__(self, stream: IO[bytes], new_file: Callable[[], Incoming]) -> None:
        self.stream, self.new_file = stream, new_file
        self.buffer, self.at = b"", 0
        self.read_before = 0  # bytes of the body before the buffer

    def files(self) -> list[Base64File]:
        if self._peek() == b"[":
            self.at += 1
            files: list[Base64File] = []
            if self._peek() == b"]":
                self.at += 1
            else:
                files.append(self._file(0))
                while self._take(b",]") == b",":
                    files.append(self._file(len(files)))
        else:
            files = [self._file(0)]
        if self._peek(end_ok=True):
            raise _malformed("extra data after the value")
        return files

    def _file(self, index: int) -> Base64File:
        if self._peek() != b"{":
            raise RequestInvalid("Invalid request.", {str(index): ["must be an object {content, filename}"]})
        self.at += 1
        incoming: Incoming | None = None
        filename = "file"
        if self._peek() == b"}":
            self.at += 1
        else:
            while True:
                key = self._name(str(index))
                self._take(b":")
                field = f"{index}.{key}"
                if key == "content" and incoming is None:
                    incoming = self._content(field)
                elif key == "filename":
                    filename = self._name(field)
                else:
                    problem = "given twice" if key == "content" else "Unknown field."
                    raise RequestInvalid("Invalid request.", {field: [problem]})
                if self._take(b",}") == b"}":
                    break
        if incoming is None:
            raise RequestInvalid("Invalid request.", {f"{index}.content": ["Missing data for required field."]})
        return Base64File(incoming, filename)

    def _name(self, field: str) -> str:
        """A short string (a key or a filename), its escapes decoded."""
        if self._peek() != b'"':
            raise RequestInvalid("Invalid request.", {field: ["Not a valid string."]})
        text = b""
        for piece in self._string():
            text += piece
            if len(text) > MAX_NAME_BYTES:
                raise RequestInvalid("Invalid request.", {field: [f"longer than {MAX_NAME_BYTES} bytes"]})
        try:
            name: str = json.loads(b'"' + text + b'"')
            name.encode("utf-8")  # a lone surrogate (\\ud800) is not text any field may hold
        except (ValueError, UnicodeError):
            raise RequestInvalid("Invalid request.", {field: ["not a valid JSON string of Unicode text"]}) from None
        return name

    def _content(self, field: str) -> Incoming:
        """The base64 string at the reading position, decoded into a new file as it arrives."""
        if self._peek() != b'"':
            raise RequestInvalid("Invalid request.", {field: ["Not a valid string."]})
        decoder = _Decoder(self.new_file(), field)
        for piece in self._string(skip_data_prefix=True):
            decoder.feed(_unescaped(piece) if piece.startswith(b"\\") else piece)
        return decoder.finish()

    def _string(self, skip_data_prefix: bool = False) -> Iterator[bytes]:
        """The JSON string at the reading position, as it arrives: runs of plain bytes (with `\\/`
        read as `/` on the way: PHP escapes every slash, a few in each line of base64), and every
        other escape whole (`\\u002f`). A data: URI's media type, up to its first comma, is
        skipped if asked (as inputs.decode_base64 reads one)."""
        self.at += 1
        if skip_data_prefix:
            self._skip_data_prefix()
        while True:
            self._ensure(1)
            stop = STRING_STOP.search(self.buffer, self.at)
            end = stop.start() if stop else len(self.buffer) - self.buffer.endswith(b"\\")
            if end == self.at and not stop:  # only a backslash, whose escape has not arrived
                self._ensure(2)
                continue
            yield self.buffer[self.at:end].replace(b"\\/", b"/")
            self.at = end
            if stop is None:
                continue
            if stop.group() == b'"':
                self.at += 1
                return
            self.at += 2
            yield stop.group() + (self._exactly(4) if stop.group() == b"\\u" else b"")

    def _skip_data_prefix(self) -> None:
        while len(self.buffer) - self.at < MAX_DATA_PREFIX and self._read_more():
            pass
        ahead = self.buffer[self.at:self.at + MAX_DATA_PREFIX]
        comma, quote = ahead.find(b","), ahead.find(b'"')
        if ahead.startswith(b"data:") and comma >= 0 and (quote < 0 or comma < quote):
            self.at += comma + 1

    def _peek(self, end_ok: bool = False) -> bytes:
        """The next byte that is not white space, not taken; b"" at the end if `end_ok`."""
        while True:
            found = NOT_SPACE.search(self.buffer, self.at)
            if found:
                self.at = found.start()
                return found.group()
            self.at = len(self.buffer)
            if not self._read_more():
                if end_ok:
                    return b""
                raise _malformed("the body ends too early")

    def _take(self, allowed: bytes) -> bytes:
        """The next byte that is not white space, which must be one of `allowed`."""
        found = self._peek()
        if not found or found not in allowed:
            expected = " or ".join(repr(chr(byte)) for byte in allowed)
            raise _malformed(f"expected {expected} at byte {self.read_before + self.at}")
        self.at += 1
        return found

    def _exactly(self, count: int) -> bytes:
        self._ensure(count)
        taken = self.buffer[self.at:self.at + count]
        self.at += count
        return taken

    def _ensure(self, count: int) -> None:
        """At least `count` bytes buffered from the reading position on (inside a string)."""
        while len(self.buffer) - self.at < count:
            if not self._read_more():
                raise _malformed("the body ends inside a string")

    def _read_more(self) -> bool:
        data = self.stream.read(CHUNK)
        if not data:
            return False
        self.read_before += self.at
        self.buffer, self.at = self.buffer[self.at:] + data, 0
        return True


def _unescaped(escape: bytes) -> bytes:
    """The character a JSON escape inside content stands for (`\\/` and `\\u002f` are slashes);
    one that is not ASCII becomes a backslash, which is no base64 either."""
    try:
        character: str = json.loads(b'"' + escape + b'"')
    except ValueError:
        return b"\\"
    return character.encode() if character.isascii() else b"\\"


class _Decoder:
    """Base64 decoded into `incoming` as it arrives: what validate=True accepts, in pieces."""

    def __init__(self, incoming: Incoming, field: str) -> None:
        self.incoming, self.field = incoming, field
        self.pending, self.padding, self.size = b"", 0, 0

    def feed(self, run: bytes) -> None:
        if not run:
            return
        match = BASE64_RUN.fullmatch(run)
        if match is None or self.padding and match.group(1):
            raise self._invalid()
        self.padding += len(match.group(2))
        if self.padding > 2:
            raise self._invalid()
        data = self.pending + run
        whole = len(data) - len(data) % 4
        if whole:
            decoded = base64.b64decode(data[:whole])
            self.incoming.write(decoded)
            self.size += len(decoded)
        self.pending = data[whole:]

    def finish(self) -> Incoming:
        self.incoming.close()
        if self.pending:
            raise self._invalid()
        if not self.size:
            raise RequestInvalid("The uploaded file is empty.", {self.field: ["the file has no content"]})
        return self.incoming

    def _invalid(self) -> RequestInvalid:
        return RequestInvalid("Invalid base64 content.", {self.field: ["is not valid base64"]})


def _malformed(reason: str) -> RequestInvalid:
    return RequestInvalid("Malformed JSON in the request body.", {"body": [f"not valid JSON: {reason}"]})
