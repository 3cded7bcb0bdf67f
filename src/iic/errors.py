"""The one exception type for bad input (the CLI prints its message as a single line, no traceback), and the two
ways untrusted values reach text safely: bounded (``brief``) and encodable whatever bytes a file name holds
(``ESCAPE``)."""

import codecs
import reprlib


class IICError(Exception):
    """A problem with the user's input (data, options, checkpoint) that the user can fix."""


_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxstring, _repr.maxother, _repr.maxlong = 2, 60, 60, 40
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = _repr.maxfrozenset = _repr.maxdeque = 4


def brief(value: object) -> str:
    """``repr(value)`` cut to a few dozen characters, without walking more of ``value`` than it shows: a YAML alias
    bomb expands to billions of items, which a plain repr would format in full."""
    return _repr.repr(value)


ESCAPE = "iic-escape"  # the encoding error handler for text that may hold file names


def _escape(error: UnicodeError) -> tuple[str, int]:
    """File names that are not valid UTF-8 reach Python as lone surrogates (U+DC80–U+DCFF for the bytes 0x80–0xFF):
    each is written as its byte, ``\\xNN``; any other character the output cannot hold as ``\\uNNNN``."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    bad = error.object[error.start:error.end]
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else f"\\u{ord(c):04x}"
                   for c in bad), error.end


codecs.register_error(ESCAPE, _escape)


def printable(text: str) -> str:
    """``text`` with what UTF-8 cannot hold escaped as ``ESCAPE`` does (for titles, names and messages)."""
    return text.encode("utf-8", ESCAPE).decode("utf-8")
