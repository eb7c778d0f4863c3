"""Parameter parsing with the Go server's rules (spec §1.1, §12.5–12.6, §12.10).

* :func:`parse_urlencoded` decodes ``application/x-www-form-urlencoded`` text like Go's
  ``url.ParseQuery``: ``+`` is a space, every ``%`` must start a valid escape, a ``;`` in a key is an error.
* :class:`Form` merges the body and the query string, body values first; single-valued fields take the
  first value, repeated fields take every non-empty value.
* :func:`bind` reads a declared argument struct (``ArgRegister``...) with Go ``strconv`` integer parsing,
  ``ParseBool`` booleans (anything unparsable is silently false) and the validator's messages.

Every failure raises :class:`~discoverd.errors.BadRequest` with a message a user can act on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from discoverd.errors import BadRequest

Kind = Literal["str", "strs", "int", "ints", "uint", "bool"]
Rule = Literal["", "required", "gt"]

_INT64_MAX: Final = (1 << 63) - 1
_UINT32_MAX: Final = (1 << 32) - 1
_TRUE: Final = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")
_DIGITS: Final = frozenset("0123456789")


def _unescape(raw: bytes) -> str:
    """Go ``QueryUnescape`` of one key or value, then strict UTF-8 decoding."""
    if b"%" in raw:
        i = raw.find(b"%")
        while i != -1:
            esc = raw[i + 1 : i + 3]
            if len(esc) != 2 or esc[0] not in _HEX or esc[1] not in _HEX:
                shown = raw[i : i + 3].decode("latin-1")
                raise BadRequest(f'invalid URL escape "{shown}"')
            i = raw.find(b"%", i + 3)
        raw = raw.replace(b"+", b" ")
        parts = raw.split(b"%")
        out = bytearray(parts[0])
        for part in parts[1:]:
            out.append(int(part[:2], 16))
            out += part[2:]
        raw = bytes(out)
    elif b"+" in raw:
        raw = raw.replace(b"+", b" ")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("parameters must be valid UTF-8 text") from None


def parse_urlencoded(raw: bytes, into: dict[str, list[str]]) -> None:
    """Add the pairs of ``raw`` to ``into`` (key → values in order); raises :class:`BadRequest`."""
    for segment in raw.split(b"&"):
        if not segment:
            continue
        key, _, value = segment.partition(b"=")
        if b";" in key:
            raise BadRequest("invalid semicolon separator in query")
        k = _unescape(key)
        into.setdefault(k, []).append(_unescape(value))


class Form:
    """The merged parameters of one request: body pairs first, then query pairs (Go ``req.Form``)."""

    __slots__ = ("values",)

    def __init__(self, values: dict[str, list[str]] | None = None) -> None:
        self.values: dict[str, list[str]] = values if values is not None else {}

    @classmethod
    def parse(cls, body: bytes, query: bytes) -> Form:
        """Parse a urlencoded ``body`` (may be empty) and a raw ``query`` string."""
        values: dict[str, list[str]] = {}
        if body:
            parse_urlencoded(body, values)
        if query:
            parse_urlencoded(query, values)
        return cls(values)

    def first(self, key: str) -> str:
        """The first value of ``key``, or ``""``."""
        vals = self.values.get(key)
        return vals[0] if vals else ""

    def many(self, key: str) -> list[str]:
        """Every non-empty value of ``key``, in order."""
        return [v for v in self.values.get(key, ()) if v]

    def __contains__(self, key: str) -> bool:
        return key in self.values

    def __repr__(self) -> str:
        return f"Form({self.values!r})"


def _quote(s: str) -> str:
    """Quote like Go's ``strconv.Quote`` for the common cases (used in error texts only)."""
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    return '"' + "".join(out) + '"'


def parse_go_int(text: str, *, unsigned: bool = False, bits: int = 64) -> int:
    """Parse like Go ``strconv.ParseInt(s, 10, 64)`` / ``ParseUint(s, 10, bits)``; ``""`` is 0.

    Python's ``int()`` accepts whitespace, ``_`` and non-ASCII digits; Go does not, and neither do we.
    """
    if text == "":
        return 0
    fn = "ParseUint" if unsigned else "ParseInt"
    digits = text
    sign = 1
    if not unsigned and text[0] in "+-":
        sign = -1 if text[0] == "-" else 1
        digits = text[1:]
    if not digits or not all(c in _DIGITS for c in digits):
        raise BadRequest(f"strconv.{fn}: parsing {_quote(text)}: invalid syntax")
    value = sign * int(digits)
    limit_hi = _UINT32_MAX if unsigned and bits == 32 else _INT64_MAX
    limit_lo = 0 if unsigned else -_INT64_MAX - 1
    if value > limit_hi or value < limit_lo:
        raise BadRequest(f"strconv.{fn}: parsing {_quote(text)}: value out of range")
    return value


def parse_go_bool(text: str) -> bool:
    """Go ``ParseBool`` as the binder uses it: only the six true spellings are true, all else false."""
    return text in _TRUE


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a Go argument struct: form key, Go field name, kind, validation rule."""

    key: str
    go_name: str
    kind: Kind = "str"
    rule: Rule = ""
    split_commas: bool = False


@dataclass(frozen=True, slots=True)
class ArgSpec:
    """A Go argument struct (``ArgRegister``...): its name and its fields in declaration order."""

    name: str
    fields: tuple[Field, ...]


def _convert(form: Form, f: Field) -> Any:
    if f.kind == "str":
        return form.first(f.key)
    if f.kind == "bool":
        return parse_go_bool(form.first(f.key))
    if f.kind == "int":
        return parse_go_int(form.first(f.key))
    if f.kind == "uint":
        return parse_go_int(form.first(f.key), unsigned=True, bits=32)
    values = form.many(f.key)
    if f.kind == "ints":
        return [parse_go_int(v) for v in values]
    if f.split_commas:
        return [part for v in values for part in v.split(",") if part]
    return values


class BindError(BadRequest):
    """A parameter failed to parse or validate (the Go server answers these without the
    ``kratos-status-code`` header)."""


def bind(form: Form, spec: ArgSpec) -> dict[str, Any]:
    """Read ``spec`` from ``form``: a dict of form key → parsed value.

    Raises :class:`BadRequest` with the ``strconv`` text for the first unparsable field, else with the
    validator's text for every failed rule (one line each, in field order), as the Go server does.
    """
    out: dict[str, Any] = {}
    try:
        for f in spec.fields:
            out[f.key] = _convert(form, f)
    except BadRequest as exc:
        raise BindError(exc.message) from None
    failures = [
        f"Key: '{spec.name}.{f.go_name}' Error:Field validation for '{f.go_name}' "
        f"failed on the '{f.rule}' tag"
        for f in spec.fields
        if f.rule and not out[f.key]
    ]
    if failures:
        raise BindError("\n".join(failures))
    return out


def _loads(text: str) -> Any:
    """Parse JSON like Go's ``json.Valid`` + ``Unmarshal``: standard JSON only, big integers allowed."""
    import json

    import orjson

    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass

    def reject(name: str) -> Any:
        raise ValueError(name)

    try:  # orjson refuses integers beyond 64 bits, which Go accepts
        return json.loads(text, parse_constant=reject)
    except ValueError:
        raise BadRequest("metadata: invalid JSON") from None


def register_metadata(text: str) -> dict[str, str] | None:
    """The ``metadata`` of a register (spec §12.2).

    Empty → ``None``. Invalid JSON → :class:`BadRequest`. A JSON object keeps its string values and
    turns every other value into ``""``; valid JSON that is not an object is stored as no metadata.
    """
    if not text:
        return None
    value = _loads(text)
    if not isinstance(value, dict):
        return None
    return {str(k): v if isinstance(v, str) else "" for k, v in value.items()}


def set_metadata(text: str) -> dict[str, str]:
    """One ``metadata`` value of ``set``: a JSON object of strings (``null`` = no change)."""
    value = _loads(text)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise BadRequest("metadata: must be a JSON object with string values")
    return value
