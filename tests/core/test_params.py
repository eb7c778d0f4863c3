"""Unit tests of the Go-compatible parameter parsing (spec §1.1, §12.2, §12.5, §12.6).

The integer tests compare :func:`parse_go_int` with a reference written here from Go's ``strconv``
source (``ParseUint`` / ``ParseInt``, base 10): the digits are read left to right and the *first*
problem found (a non-digit → syntax error, an overflow → range error) decides the error.
"""

from __future__ import annotations

import dataclasses
from urllib.parse import parse_qsl, urlencode

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from discoverd.core import args as specs
from discoverd.core.events import Source
from discoverd.core.params import (
    ArgSpec,
    BindError,
    Form,
    bind,
    parse_go_bool,
    parse_go_int,
    parse_urlencoded,
    register_metadata,
    set_metadata,
)
from discoverd.errors import BAD_REQUEST, BadRequest

_MAX_UINT64 = (1 << 64) - 1
_SETTINGS = settings(max_examples=300, deadline=None, database=None)

# -- Go strconv reference ------------------------------------------------------------------------


def _go_parse_uint(s: str, bits: int) -> int | str:
    """Go ``strconv.ParseUint(s, 10, bits)``: the value, or ``"syntax"`` / ``"range"``."""
    if s == "":
        return "syntax"
    max_val = (1 << bits) - 1
    cutoff = _MAX_UINT64 // 10 + 1
    n = 0
    for ch in s:  # Go walks bytes; a non-ASCII character's first byte is never a digit
        if not "0" <= ch <= "9":
            return "syntax"
        if n >= cutoff:
            return "range"
        n1 = n * 10 + (ord(ch) - ord("0"))
        if n1 > max_val:  # covers Go's uint64 wrap-around (n1 < n) too
            return "range"
        n = n1
    return n


def _go_parse_int(s: str) -> int | str:
    """Go ``strconv.ParseInt(s, 10, 64)``: the value, or ``"syntax"`` / ``"range"``."""
    if s == "":
        return "syntax"
    neg = s[0] == "-"
    body = s[1:] if s[0] in "+-" else s
    un = _go_parse_uint(body, 64)
    if un == "syntax":
        return "syntax"
    if un == "range":
        un = _MAX_UINT64
    assert isinstance(un, int)
    cutoff = 1 << 63
    if (not neg and un >= cutoff) or (neg and un > cutoff):
        return "range"
    return -un if neg else un


def _go_bind_int(s: str, *, unsigned: bool, bits: int) -> tuple[bool, int | str]:
    """What the Go binder yields for one integer field: ``(True, value)`` or ``(False, error text)``.

    The binder turns ``""`` into ``"0"`` before calling strconv. Only used on printable text, for
    which Go's ``strconv.Quote`` just escapes ``"`` and ``\\``.
    """
    if s == "":
        return True, 0
    res = _go_parse_uint(s, bits) if unsigned else _go_parse_int(s)
    if isinstance(res, int):
        return True, res
    fn = "ParseUint" if unsigned else "ParseInt"
    quoted = '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    what = "invalid syntax" if res == "syntax" else "value out of range"
    return False, f"strconv.{fn}: parsing {quoted}: {what}"


def _ours(s: str, *, unsigned: bool, bits: int) -> tuple[bool, int | str]:
    try:
        return True, parse_go_int(s, unsigned=unsigned, bits=bits)
    except BadRequest as exc:
        assert exc.code == BAD_REQUEST
        return False, exc.message


def test_reference_matches_go_examples() -> None:
    # Sanity of the reference itself (values from Go's strconv tests / documentation).
    assert _go_parse_int("-9223372036854775808") == -(1 << 63)
    assert _go_parse_int("9223372036854775808") == "range"
    assert _go_parse_int("+") == "syntax"
    assert _go_parse_uint("18446744073709551615", 64) == _MAX_UINT64
    assert _go_parse_uint("18446744073709551616", 64) == "range"
    assert _go_parse_uint("4294967296", 32) == "range"
    assert _go_parse_uint("1x", 32) == "syntax"


# Printable characters only (Go and Python agree on how to quote them).
_NUMBERISH = st.one_of(
    st.text(alphabet='0123456789+-_ .xXeE"\\a١²𝟙', max_size=24),
    st.integers(min_value=-(1 << 66), max_value=1 << 66).map(str),
    st.builds(
        lambda sign, zeros, n, junk: f"{sign}{'0' * zeros}{n}{junk}",
        st.sampled_from(["", "+", "-"]),
        st.integers(min_value=0, max_value=3),
        st.integers(min_value=0, max_value=1 << 70),
        st.sampled_from(["", "x", " ", "_0", ".5", "١"]),
    ),
)


@_SETTINGS
@given(_NUMBERISH)
@example("99999999999999999999x")  # overflow is met before the bad character: Go says out of range
def test_parse_go_int_signed_agrees_with_go(s: str) -> None:
    assert _ours(s, unsigned=False, bits=64) == _go_bind_int(s, unsigned=False, bits=64)


@_SETTINGS
@given(_NUMBERISH)
@example("4294967296x")
def test_parse_go_int_uint32_agrees_with_go(s: str) -> None:
    assert _ours(s, unsigned=True, bits=32) == _go_bind_int(s, unsigned=True, bits=32)


@_SETTINGS
@given(_NUMBERISH)
@example("18446744073709551615")
def test_parse_go_int_uint64_agrees_with_go(s: str) -> None:
    assert _ours(s, unsigned=True, bits=64) == _go_bind_int(s, unsigned=True, bits=64)


@pytest.mark.parametrize(
    ("text", "value"),
    [("", 0), ("0", 0), ("+5", 5), ("-0", 0), ("007", 7), ("-12", -12), ("9223372036854775807", 2**63 - 1)],
)
def test_parse_int_accepts(text: str, value: int) -> None:
    assert parse_go_int(text) == value


@pytest.mark.parametrize(("text", "value"), [("", 0), ("1", 1), ("0002", 2), ("4294967295", 2**32 - 1)])
def test_parse_uint32_accepts(text: str, value: int) -> None:
    assert parse_go_int(text, unsigned=True, bits=32) == value


@pytest.mark.parametrize(
    "text", ["+1", "-0", "-1", " 1", "1 ", "1_0", "١", "0x10", "1.5", "1e3", "x1", "+", "-", "\u0661\u0662"]
)
def test_parse_uint_syntax_errors(text: str) -> None:
    with pytest.raises(BadRequest) as ei:
        parse_go_int(text, unsigned=True, bits=32)
    assert ei.value.message == f'strconv.ParseUint: parsing "{text}": invalid syntax'


@pytest.mark.parametrize("text", [" 5", "5 ", "1_000", "١", "0x10", "1.5", "+", "-", "--1", "+-1", "٣٤"])
def test_parse_int_syntax_errors(text: str) -> None:
    with pytest.raises(BadRequest) as ei:
        parse_go_int(text)
    assert ei.value.message == f'strconv.ParseInt: parsing "{text}": invalid syntax'


def test_exact_error_texts() -> None:
    with pytest.raises(BadRequest) as ei:
        parse_go_int("x1", unsigned=True, bits=32)
    assert ei.value.message == 'strconv.ParseUint: parsing "x1": invalid syntax'
    with pytest.raises(BadRequest) as ei:
        parse_go_int("4294967296", unsigned=True, bits=32)
    assert ei.value.message == 'strconv.ParseUint: parsing "4294967296": value out of range'
    with pytest.raises(BadRequest) as ei:
        parse_go_int("9223372036854775808")
    assert ei.value.message == 'strconv.ParseInt: parsing "9223372036854775808": value out of range'
    with pytest.raises(BadRequest) as ei:
        parse_go_int("-9223372036854775809")
    assert ei.value.message == 'strconv.ParseInt: parsing "-9223372036854775809": value out of range'
    assert parse_go_int("-9223372036854775808") == -(2**63)


def test_overflow_before_bad_character_is_a_range_error() -> None:
    """Go reads left to right: the overflow at the 20th digit is reported, not the ``x`` after it."""
    with pytest.raises(BadRequest) as ei:
        parse_go_int("99999999999999999999x")
    assert ei.value.message == 'strconv.ParseInt: parsing "99999999999999999999x": value out of range'
    with pytest.raises(BadRequest) as ei:
        parse_go_int("4294967296x", unsigned=True, bits=32)
    assert ei.value.message == 'strconv.ParseUint: parsing "4294967296x": value out of range'


@pytest.mark.parametrize("unsigned", [False, True])
def test_very_long_digit_strings_are_parsed_not_crashed(unsigned: bool) -> None:
    """Python's ``int()`` refuses > 4300 digits with ValueError; Go handles any length."""
    assert parse_go_int("0" * 5000 + "7", unsigned=unsigned, bits=32) == 7
    with pytest.raises(BadRequest) as ei:
        parse_go_int("1" * 5000, unsigned=unsigned, bits=32)
    assert ei.value.message.endswith(": value out of range")


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ('a"b', '"a\\"b"'),
        ("a\\b", '"a\\\\b"'),
        ("\x00", '"\\x00"'),
        ("\x7f", '"\\x7f"'),
        ("é", '"é"'),
        ("\n", '"\\n"'),
        ("\t", '"\\t"'),
        ("\r", '"\\r"'),
        ("\x80", '"\\u0080"'),
        ("\u00a0", '"\\u00a0"'),
        ("\U000f0000", '"\\U000f0000"'),
    ],
)
def test_error_text_quotes_like_strconv_quote(text: str, quoted: str) -> None:
    with pytest.raises(BadRequest) as ei:
        parse_go_int(text)
    assert ei.value.message == f"strconv.ParseInt: parsing {quoted}: invalid syntax"


# -- ParseBool (§12.6) ---------------------------------------------------------------------------

_TRUE = ("1", "t", "T", "TRUE", "true", "True")


@pytest.mark.parametrize("text", _TRUE)
def test_parse_bool_true_spellings(text: str) -> None:
    assert parse_go_bool(text) is True


@pytest.mark.parametrize(
    "text", ["0", "f", "F", "FALSE", "false", "False", "", "yes", "on", "tRUE", " true", "1 ", "2", "٠١"]
)
def test_parse_bool_everything_else_is_false(text: str) -> None:
    assert parse_go_bool(text) is False


@_SETTINGS
@given(st.text(max_size=8))
def test_parse_bool_property(text: str) -> None:
    assert parse_go_bool(text) is (text in _TRUE)


# -- urlencoded (§1.1, §12.10) -------------------------------------------------------------------


def _parse(raw: bytes) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    parse_urlencoded(raw, out)
    return out


def test_urlencoded_basics() -> None:
    assert _parse(b"a=1&b=x+y&a=2") == {"a": ["1", "2"], "b": ["x y"]}
    assert _parse(b"k=%41%2b%20%25&e=%C3%A9") == {"k": ["A+ %"], "e": ["é"]}
    assert _parse(b"a+b=c%3Dd") == {"a b": ["c=d"]}
    assert _parse(b"flag&x=") == {"flag": [""], "x": [""]}
    assert _parse(b"&&a=1&&") == {"a": ["1"]}
    assert _parse(b"=v") == {"": ["v"]}
    assert _parse(b"a=b=c") == {"a": ["b=c"]}
    assert _parse(b"") == {}


def test_urlencoded_appends_to_existing() -> None:
    out = {"a": ["0"]}
    parse_urlencoded(b"a=1&b=2", out)
    assert out == {"a": ["0", "1"], "b": ["2"]}


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b"a=%", "%"),
        (b"a=%4", "%4"),
        (b"a=%zz", "%zz"),
        (b"a=%G0&b=1", "%G0"),
        (b"a=1%2", "%2"),
        (b"%x1=1", "%x1"),
        (b"a=%41%4", "%4"),
    ],
)
def test_urlencoded_invalid_escapes(raw: bytes, shown: str) -> None:
    with pytest.raises(BadRequest) as ei:
        _parse(raw)
    assert ei.value.message == f'invalid URL escape "{shown}"'


def test_urlencoded_semicolon_in_key_is_an_error() -> None:
    with pytest.raises(BadRequest) as ei:
        _parse(b"a;b=1")
    assert ei.value.message == "invalid semicolon separator in query"
    with pytest.raises(BadRequest):
        _parse(b"x=1&a;=2")


def test_urlencoded_semicolon_in_value_is_an_error() -> None:
    """Go ≥ 1.17 ``parseQuery`` rejects a ``;`` anywhere in the ``key=value`` segment."""
    with pytest.raises(BadRequest) as ei:
        _parse(b"a=b;c")
    assert ei.value.message == "invalid semicolon separator in query"
    assert _parse(b"a=b%3Bc") == {"a": ["b;c"]}  # an escaped one is data


@pytest.mark.parametrize("raw", [b"a=\xff", b"a=%FF", b"%C3=1", b"a=%ED%A0%80", b"a=%C0%80"])
def test_urlencoded_invalid_utf8(raw: bytes) -> None:
    with pytest.raises(BadRequest):
        _parse(raw)


_NO_SURROGATES = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=12)


@_SETTINGS
@given(st.lists(st.tuples(_NO_SURROGATES, _NO_SURROGATES), max_size=8))
def test_urlencode_round_trip(pairs: list[tuple[str, str]]) -> None:
    expected: dict[str, list[str]] = {}
    for k, v in pairs:
        expected.setdefault(k, []).append(v)
    assert _parse(urlencode(pairs).encode("ascii")) == expected


@_SETTINGS
@given(st.binary(max_size=40))
def test_urlencoded_never_crashes(raw: bytes) -> None:
    try:
        out = _parse(raw)
    except BadRequest as exc:
        assert exc.code == BAD_REQUEST
    else:
        assert all(isinstance(k, str) and all(isinstance(v, str) for v in vs) for k, vs in out.items())


_TOKENS = st.sampled_from(
    [
        "a",
        "Z",
        "0",
        "=",
        "&",
        "+",
        " ",
        "é",
        "中",
        "%41",
        "%2f",
        "%2F",
        "%3d",
        "%26",
        "%25",
        "%2b",
        "%c3%a9",
        "%C3%A9",
        "%e4%b8%ad",
        "%7B",
        "%22",
        "%00",
        "%7f",
    ]
)


@_SETTINGS
@given(st.lists(_TOKENS, max_size=24))
def test_urlencoded_matches_the_standard_library(tokens: list[str]) -> None:
    """Valid UTF-8 with well-formed escapes in either letter case: the pairs ``parse_qsl`` reads."""
    text = "".join(tokens)
    expected: dict[str, list[str]] = {}
    for k, v in parse_qsl(text, keep_blank_values=True, errors="strict"):
        expected.setdefault(k, []).append(v)
    assert _parse(text.encode()) == expected


# -- Form ----------------------------------------------------------------------------------------


def test_form_body_values_come_before_query_values() -> None:
    form = Form.parse(b"appid=body&zone=bz", b"appid=query&env=qe")
    assert form.values == {"appid": ["body", "query"], "zone": ["bz"], "env": ["qe"]}
    assert form.first("appid") == "body"
    assert form.first("env") == "qe"
    assert form.first("missing") == ""
    assert "zone" in form
    assert "missing" not in form


def test_form_many_drops_empty_values() -> None:
    form = Form.parse(b"", b"latest_timestamp=&latest_timestamp=5&latest_timestamp=&latest_timestamp=0")
    assert form.many("latest_timestamp") == ["5", "0"]
    assert form.many("nothing") == []
    assert Form.parse(b"", b"a=&a=x").first("a") == ""  # single-valued: the first value, even empty


@_SETTINGS
@given(
    st.lists(st.tuples(st.sampled_from("abc"), _NO_SURROGATES), max_size=6),
    st.lists(st.tuples(st.sampled_from("abc"), _NO_SURROGATES), max_size=6),
)
def test_form_merge_property(body: list[tuple[str, str]], query: list[tuple[str, str]]) -> None:
    form = Form.parse(urlencode(body).encode(), urlencode(query).encode())
    for key in "abc":
        values = [v for k, v in body + query if k == key]
        assert form.first(key) == (values[0] if values else "")
        assert form.many(key) == [v for v in values if v]


# -- bind (§1.1 validation messages) -------------------------------------------------------------


def _form(*pairs: tuple[str, str]) -> Form:
    return Form.parse(urlencode(pairs).encode(), b"")


def _msg(struct: str, field: str, tag: str = "required") -> str:
    return f"Key: '{struct}.{field}' Error:Field validation for '{field}' failed on the '{tag}' tag"


_REG = (
    ("zone", "sh001"),
    ("env", "dev"),
    ("appid", "demo.svc"),
    ("hostname", "h1"),
    ("status", "1"),
    ("addrs", "http://10.0.0.1:8000"),
)


def test_bind_register_ok() -> None:
    a = bind(
        _form(*_REG, ("dirty_timestamp", "+12"), ("replication", "yes"), ("from_zone", "T")), specs.REGISTER
    )
    assert a.zone == "sh001"
    assert a.status == 1
    assert a.addrs == ("http://10.0.0.1:8000",)
    assert a.dirty_timestamp == 12
    assert a.latest_timestamp == 0
    assert a.replication is False
    assert a.from_zone is True
    assert a.region == ""
    assert a.metadata == ""
    assert isinstance(a, specs.RegisterArgs) and a.source is Source.ZONE


@pytest.mark.parametrize("spec", specs.SPECS, ids=lambda s: s.name)
def test_each_spec_lists_its_dataclass_fields_in_order(spec: ArgSpec[object]) -> None:
    assert isinstance(spec.build, type) and dataclasses.is_dataclass(spec.build)
    assert [f.key for f in spec.fields] == [f.name for f in dataclasses.fields(spec.build)]
    args = spec.build(*(None for _ in spec.fields))
    with pytest.raises(dataclasses.FrozenInstanceError):
        args.zone = "changed"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("replication", "from_zone", "source"),
    [("false", "false", Source.CLIENT), ("false", "true", Source.ZONE), ("true", "false", Source.PEER),
     ("true", "true", Source.PEER)],
)  # fmt: skip
def test_write_flags_become_the_source(replication: str, from_zone: str, source: Source) -> None:
    a = bind(_form(*_REG, ("replication", replication), ("from_zone", from_zone)), specs.REGISTER)
    assert a.source is source


def test_bind_single_missing_field() -> None:
    pairs = [p for p in _REG if p[0] != "zone"]
    with pytest.raises(BindError) as ei:
        bind(_form(*pairs), specs.REGISTER)
    assert ei.value.message == _msg("ArgRegister", "Zone")
    assert ei.value.code == BAD_REQUEST
    assert isinstance(ei.value, BadRequest)


def test_bind_all_failures_joined_in_field_order() -> None:
    with pytest.raises(BindError) as ei:
        bind(_form(("region", "sh"), ("addrs", "")), specs.REGISTER)
    assert ei.value.message == "\n".join(
        [
            _msg("ArgRegister", "Zone"),
            _msg("ArgRegister", "Env"),
            _msg("ArgRegister", "AppID"),
            _msg("ArgRegister", "Hostname"),
            _msg("ArgRegister", "Status"),
            _msg("ArgRegister", "Addrs", "gt"),
        ]
    )


def test_bind_zero_status_fails_required() -> None:
    pairs = [p for p in _REG if p[0] != "status"]
    with pytest.raises(BindError) as ei:
        bind(_form(*pairs, ("status", "0")), specs.REGISTER)
    assert ei.value.message == _msg("ArgRegister", "Status")


def test_bind_parse_error_wins_over_validation_and_first_field_wins() -> None:
    with pytest.raises(BindError) as ei:
        bind(_form(("status", "x1"), ("dirty_timestamp", "y")), specs.REGISTER)
    assert ei.value.message == 'strconv.ParseUint: parsing "x1": invalid syntax'
    with pytest.raises(BindError) as ei:
        bind(_form(*_REG, ("latest_timestamp", "1.5"), ("dirty_timestamp", "y")), specs.REGISTER)
    assert ei.value.message == 'strconv.ParseInt: parsing "1.5": invalid syntax'


@pytest.mark.parametrize("status", ["-1", "+1", "-0", "4294967296"])
def test_bind_register_status_is_unsigned(status: str) -> None:
    pairs = [p for p in _REG if p[0] != "status"]
    with pytest.raises(BindError) as ei:
        bind(_form(*pairs, ("status", status)), specs.REGISTER)
    assert ei.value.message.startswith(f'strconv.ParseUint: parsing "{status}": ')


def test_bind_first_value_wins_for_single_fields() -> None:
    a = bind(_form(("appid", "first"), *_REG, ("appid", "last")), specs.REGISTER)
    assert a.appid == "first"
    with pytest.raises(BindError) as ei:  # an empty first value is the value: required fails
        bind(_form(("zone", ""), *_REG), specs.REGISTER)
    assert ei.value.message == _msg("ArgRegister", "Zone")


def test_bind_addrs_repeated_and_comma_split() -> None:
    a = bind(
        _form(*_REG, ("addrs", "grpc://1.2.3.4:9000,http://1.2.3.4:8000"), ("addrs", ""), ("addrs", "x")),
        specs.REGISTER,
    )
    assert a.addrs == ("http://10.0.0.1:8000", "grpc://1.2.3.4:9000", "http://1.2.3.4:8000", "x")
    pairs = [p for p in _REG if p[0] != "addrs"]
    with pytest.raises(BindError) as ei:
        bind(_form(*pairs, ("addrs", ",,"), ("addrs", "")), specs.REGISTER)
    assert ei.value.message == _msg("ArgRegister", "Addrs", "gt")


def test_bind_other_lists_are_not_comma_split() -> None:
    a = bind(_form(("env", "dev"), ("appid", "a,b"), ("status", "1")), specs.FETCHS)
    assert a.appid == ("a,b",)


def test_bind_polls_lists() -> None:
    a = bind(
        _form(
            ("env", "dev"),
            ("hostname", "c1"),
            ("appid", "a"),
            ("appid", ""),
            ("appid", "b"),
            ("latest_timestamp", ""),
            ("latest_timestamp", "+5"),
            ("latest_timestamp", "-0"),
        ),
        specs.POLLS,
    )
    assert a.appid == ("a", "b")
    assert a.latest_timestamp == (5, 0)
    assert a.zone == ""
    with pytest.raises(BindError) as ei:
        bind(
            _form(("env", "dev"), ("hostname", "c"), ("appid", "a"), ("latest_timestamp", "0x1")), specs.POLLS
        )
    assert ei.value.message == 'strconv.ParseInt: parsing "0x1": invalid syntax'
    with pytest.raises(BindError) as ei:
        bind(_form(("appid", "")), specs.POLLS)
    assert ei.value.message == "\n".join(
        [_msg("ArgPolls", "Env"), _msg("ArgPolls", "AppID", "gt"), _msg("ArgPolls", "Hostname")]
    )


def test_bind_fetch_and_renew_messages() -> None:
    with pytest.raises(BindError) as ei:
        bind(_form(("zone", "z")), specs.FETCH)
    assert ei.value.message == "\n".join(
        [_msg("ArgFetch", "Env"), _msg("ArgFetch", "AppID"), _msg("ArgFetch", "Status")]
    )
    with pytest.raises(BindError) as ei:
        bind(_form(("zone", "z"), ("env", "e"), ("appid", "a")), specs.RENEW)
    assert ei.value.message == _msg("ArgRenew", "Hostname")
    with pytest.raises(BindError) as ei:
        bind(_form(), specs.CANCEL)
    assert ei.value.message.splitlines() == [
        _msg("ArgCancel", "Zone"),
        _msg("ArgCancel", "Env"),
        _msg("ArgCancel", "AppID"),
        _msg("ArgCancel", "Hostname"),
    ]


def test_bind_set_signed_statuses_and_optional_lists() -> None:
    a = bind(
        _form(
            ("zone", "z"),
            ("env", "e"),
            ("appid", "a"),
            ("hostname", "h1"),
            ("hostname", "h2"),
            ("status", "+1"),
            ("status", "-0"),
            ("set_timestamp", "0012"),
        ),
        specs.SET,
    )
    assert a.hostname == ("h1", "h2")
    assert a.status == (1, 0)
    assert a.metadata == ()
    assert a.set_timestamp == 12
    b = bind(_form(("zone", "z"), ("env", "e"), ("appid", "a")), specs.SET)
    assert b.hostname == ()  # no validation tag: the handler rejects it


# -- metadata (§12.2) ----------------------------------------------------------------------------


def test_register_metadata_rules() -> None:
    assert register_metadata("") is None
    assert register_metadata('{"weight":"10"}') == {"weight": "10"}
    assert register_metadata('{"weight":10,"color":"red"}') == {"weight": "", "color": "red"}
    assert register_metadata('{"a":{"b":"c"},"n":null,"t":true,"l":[1]}') == {
        "a": "",
        "n": "",
        "t": "",
        "l": "",
    }
    assert register_metadata(' {"a":"b"} ') == {"a": "b"}
    assert register_metadata("{}") == {}
    assert register_metadata('{"a":"x","a":"y"}') == {"a": "y"}  # Go: the last duplicate wins
    assert register_metadata('{"a":1e400}') == {"a": ""}


@pytest.mark.parametrize("text", ["[1,2]", '"s"', "123", "null", "true", "false", "[]", "-0.5e3"])
def test_register_metadata_non_object_is_no_metadata(text: str) -> None:
    assert register_metadata(text) is None


@pytest.mark.parametrize(
    "text", ["{", '{"a":}', "{'a':'b'}", "NaN", '{"a":NaN}', '{"a":Infinity}', "[1,]", '{"a":"b"} x', "tru"]
)
def test_register_metadata_invalid_json(text: str) -> None:
    with pytest.raises(BadRequest) as ei:
        register_metadata(text)
    assert ei.value.code == BAD_REQUEST


def test_register_metadata_big_integers_are_valid_json() -> None:
    """Go's ``json.Valid`` accepts numbers of any length; Python's int() limit must not leak out."""
    assert register_metadata('{"a":' + "1" * 5000 + ',"b":"c"}') == {"a": "", "b": "c"}
    assert register_metadata("1" * 5000) is None


def test_register_metadata_lone_surrogate_becomes_replacement_char() -> None:
    """Go decodes an unpaired ``\\ud800`` escape as U+FFFD; keeping a lone surrogate makes the
    stored metadata unencodable (orjson refuses it), which breaks every later fetch of the app."""
    assert register_metadata('{"a":"x\\ud800y","\\udc00":"b"}') == {"a": "x\ufffdy", "\ufffd": "b"}
    assert register_metadata('{"a":"\\ud83d\\ude00"}') == {"a": "\U0001f600"}  # a pair is one character


@pytest.mark.parametrize("depth", [2000, 100_000])
def test_register_metadata_deep_nesting_is_a_bad_request(depth: int) -> None:
    with pytest.raises(BadRequest):
        register_metadata("[" * depth)
    with pytest.raises(BadRequest):
        register_metadata('{"a":' + "[" * depth + "]" * depth + "}")


def test_set_metadata_is_strict() -> None:
    assert set_metadata('{"color":"red","weight":"3"}') == {"color": "red", "weight": "3"}
    assert set_metadata("{}") == {}
    assert set_metadata("null") == {}
    for bad in ['{"weight":3}', '{"a":null}', "[1]", '"s"', "7", "true", "{", "", '{"a":{"b":"c"}}']:
        with pytest.raises(BadRequest):
            set_metadata(bad)
