"""Parameter parsing with the Go server's rules (spec §1.1, §12.5–12.6, §12.10).

* :func:`parse_urlencoded` decodes ``application/x-www-form-urlencoded`` text like Go's
  ``url.ParseQuery``: ``+`` is a space, every ``%`` must start a valid escape, a ``;`` in a key is an error.
* :class:`Form` merges the body and the query string, body values first; single-valued fields take the
  first value, repeated fields take every non-empty value.
* :func:`bind` reads a declared argument struct (``ArgRegister``...) into its frozen dataclass
  (:mod:`discoverd.core.args`) with Go ``strconv`` integer parsing, ``ParseBool`` booleans (anything
  unparsable is silently false) and the validator's messages.

Every failure raises :class:`~discoverd.errors.BadRequest` with a message a user can act on.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Literal, TypeVar
from urllib.parse import unquote

from discoverd.errors import BadRequest

Kind = Literal["str", "strs", "int", "ints", "uint", "bool"]
Rule = Literal["", "required", "gt"]

_INT64_MAX: Final = (1 << 63) - 1
_UINT32_MAX: Final = (1 << 32) - 1
_TRUE: Final = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_BAD_ESCAPE: Final = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_DIGIT_RUN: Final = re.compile(r"[0-9]*", re.ASCII)


def _hex_pairs() -> dict[str, str]:
    """Every two-hex-digit escape of an ASCII character, in any letter case: ``"2f"``/``"2F"`` → ``"/"``."""
    table: dict[str, str] = {}
    for code in range(128):
        pair = f"{code:02x}"
        hi, lo = pair[0], pair[1]
        for h in {hi, hi.upper()}:
            for low in {lo, lo.upper()}:
                table[h + low] = chr(code)
    return table


_ASCII_ESCAPES: Final = _hex_pairs()


def _unescape(text: str) -> str:
    """Go ``QueryUnescape`` of one key or value whose escapes were already checked (``%`` + 2 hex digits).

    Escapes of ASCII characters are looked up in a table; a value with any other escape goes through
    :func:`urllib.parse.unquote` with strict UTF-8 (raises ``UnicodeDecodeError`` on invalid UTF-8).
    """
    head, *rest = text.split("%")
    try:
        return head + "".join([_ASCII_ESCAPES[part[:2]] + part[2:] for part in rest])
    except KeyError:
        return unquote(text, errors="strict")


def parse_urlencoded(raw: bytes, into: dict[str, list[str]]) -> None:
    """Add the pairs of ``raw`` to ``into`` (key → values in order); raises :class:`BadRequest`.

    Go ``url.ParseQuery``: pairs split on ``&``, key and value on the first ``=``, ``+`` is a space,
    every ``%`` must start a two-hex-digit escape (the first that does not is refused with its text,
    ``invalid URL escape "%zz"``, at most 3 characters as Go shows it), a ``;`` is refused. Unlike Go,
    the text must be UTF-8 once unescaped.
    """
    if b";" in raw:
        raise BadRequest("invalid semicolon separator in query")
    if b"+" in raw:
        raw = raw.replace(b"+", b" ")
    escaped = b"%" in raw
    if escaped:
        bad = _BAD_ESCAPE.search(raw)
        if bad is not None:
            shown = raw[bad.start() : bad.start() + 3].decode("latin-1")
            raise BadRequest(f'invalid URL escape "{shown}"')
    try:
        for segment in raw.decode().split("&"):
            if segment:
                key, _, value = segment.partition("=")
                if escaped:
                    key = _unescape(key) if "%" in key else key
                    value = _unescape(value) if "%" in value else value
                values = into.get(key)
                if values is None:
                    into[key] = [value]
                else:
                    values.append(value)
    except UnicodeDecodeError:
        raise BadRequest("parameters must be valid UTF-8 text") from None


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


_GO_ESCAPES: Final = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    '"': '\\"',
    "\\": "\\\\",
}


def _quote(s: str) -> str:
    """Quote like Go's ``strconv.Quote`` (used in error texts only)."""
    out = []
    for ch in s:
        esc = _GO_ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
        elif ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            if code < 0x20 or code == 0x7F:
                out.append(f"\\x{code:02x}")
            elif code < 0x10000:
                out.append(f"\\u{code:04x}")
            else:
                out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def parse_go_int(text: str, *, unsigned: bool = False, bits: int = 64) -> int:
    """Parse like Go ``strconv.ParseInt(s, 10, 64)`` / ``ParseUint(s, 10, bits)``; ``""`` is 0.

    Python's ``int()`` accepts whitespace, ``_`` and non-ASCII digits, and refuses numbers of more
    than 4300 digits with an exception; Go does none of these, and neither do we. As in Go, digits are
    read left to right: an overflow before the first bad character is a range error.
    """
    if text == "":
        return 0
    fn = "ParseUint" if unsigned else "ParseInt"
    digits, negative = text, False
    if not unsigned and text[0] in "+-":
        negative, digits = text[0] == "-", text[1:]
    run = _DIGIT_RUN.match(digits)
    prefix = run.group() if run else ""
    significant = prefix.lstrip("0")
    limit = (1 << bits) - 1 if unsigned else (1 << 64) - 1
    if len(significant) > 20 or (significant and int(significant) > limit):
        raise BadRequest(f"strconv.{fn}: parsing {_quote(text)}: value out of range")
    if not prefix or len(prefix) != len(digits):
        raise BadRequest(f"strconv.{fn}: parsing {_quote(text)}: invalid syntax")
    value = int(significant or "0")
    if not unsigned:
        if value > _INT64_MAX + (1 if negative else 0):
            raise BadRequest(f"strconv.{fn}: parsing {_quote(text)}: value out of range")
        value = -value if negative else value
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


T = TypeVar("T")


Converter = Callable[[list[str] | None], Any]
"""Turns a field's raw values (``None`` when the key is absent) into its bound value."""


def _many(values: list[str] | None) -> list[str]:
    return [v for v in values if v] if values else []


def _split(values: list[str] | None) -> tuple[str, ...]:
    return tuple(part for v in _many(values) for part in v.split(",") if part)


_CONVERTERS: Final[dict[str, Converter]] = {
    "bool": lambda vals: parse_go_bool(vals[0]) if vals else False,
    "int": lambda vals: parse_go_int(vals[0]) if vals else 0,
    "uint": lambda vals: parse_go_int(vals[0], unsigned=True, bits=32) if vals else 0,
    "ints": lambda vals: tuple(parse_go_int(v) for v in _many(vals)),
    "strs": lambda vals: tuple(_many(vals)),
}


def _converter(f: Field) -> Converter | None:
    """``None`` for a plain string (the first value, or ""): :func:`bind` does that inline."""
    if f.kind == "str":
        return None
    return _split if f.split_commas else _CONVERTERS[f.kind]


@dataclass(frozen=True, slots=True)
class ArgSpec(Generic[T]):
    """A Go argument struct (``ArgRegister``...): its name, its fields in declaration order, and the
    frozen dataclass built from the parsed values (positionally, in field order)."""

    name: str
    fields: tuple[Field, ...]
    build: Callable[..., T]
    plan: tuple[tuple[str, Converter | None], ...] = field(init=False, repr=False)
    """Per field, its form key and converter: what :func:`bind` runs, computed once."""
    required: tuple[int, ...] = field(init=False, repr=False)
    """The positions of the fields with a validation rule."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "plan", tuple((f.key, _converter(f)) for f in self.fields))
        object.__setattr__(self, "required", tuple(i for i, f in enumerate(self.fields) if f.rule))


class BindError(BadRequest):
    """A parameter failed to parse or validate (the Go server answers these without the
    ``kratos-status-code`` header)."""


def bind(form: Form, spec: ArgSpec[T]) -> T:
    """Read ``spec`` from ``form`` into its dataclass (repeated fields become tuples).

    Raises :class:`BindError` with the ``strconv`` text for the first unparsable field, else with the
    validator's text for every failed rule (one line each, in field order), as the Go server does.
    Single-valued fields take the first value; repeated ones every non-empty value (:class:`Form`).
    """
    raw = form.values.get
    values: list[Any] = []
    try:
        for key, convert in spec.plan:
            vals = raw(key)
            values.append((vals[0] if vals else "") if convert is None else convert(vals))
    except BadRequest as exc:
        raise BindError(exc.message) from None
    for i in spec.required:
        if not values[i]:
            raise BindError(_validation_failures(spec, values))
    return spec.build(*values)


def _validation_failures(spec: ArgSpec[T], values: list[Any]) -> str:
    return "\n".join(
        f"Key: '{spec.name}.{f.go_name}' Error:Field validation for '{f.go_name}' "
        f"failed on the '{f.rule}' tag"
        for f, value in zip(spec.fields, values, strict=True)
        if f.rule and not value
    )


_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _clean(value: Any) -> Any:
    """Replace lone surrogates (which Go decodes as U+FFFD) in every string of a JSON value."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _loads(text: str) -> Any:
    """Parse JSON like Go's ``json.Valid`` + ``Unmarshal``: standard JSON only, numbers of any size."""
    import json

    from discoverd import jsoncodec

    try:
        return jsoncodec.loads(text)
    except jsoncodec.DecodeError:
        pass

    def reject(name: str) -> Any:
        raise ValueError(name)

    try:  # jsoncodec refuses big integers and lone surrogates, which Go accepts
        value = json.loads(text, parse_constant=reject, parse_int=float)
    except (ValueError, RecursionError):
        raise BadRequest("metadata: invalid JSON") from None
    return _clean(value)


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
