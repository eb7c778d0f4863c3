"""discoverd's JSON codec: the one module that imports orjson.

orjson keeps int64 nanosecond timestamps exact (no float round trip) and encodes a 7 KB fetch body
about ten times faster than the standard library. Everything in discoverd encodes and decodes JSON
through these names, so the codec can be swapped in one place:

* :func:`dumps` ``(obj, default=None, option=None) -> bytes`` — UTF-8 JSON, no spaces, dict keys in
  insertion order; raises :class:`EncodeError` for an unencodable value (unless ``default`` converts it)
  or an integer outside 64 bits;
* :func:`loads` ``(bytes | str) -> object`` — standard JSON only (no NaN/Infinity, no lone surrogates,
  integers within 64 bits); raises :class:`DecodeError`, a subclass of :class:`ValueError`.
"""

from __future__ import annotations

from orjson import OPT_SORT_KEYS, dumps, loads
from orjson import JSONDecodeError as DecodeError
from orjson import JSONEncodeError as EncodeError

__all__ = ["OPT_SORT_KEYS", "DecodeError", "EncodeError", "dumps", "loads"]
