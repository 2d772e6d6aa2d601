"""The event protocol: exact paths, stable ids, and reading that never dies on bad lines."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fileconveyor import events
from fileconveyor.events import BadLine, EventError, FileStat

HOSTILE = [
    b"plain.txt",
    b"with space.css",
    b"new\nline",
    b"quote\"and'apostrophe",
    b"back\\slash",
    b"-leading-dash",
    b"\xff\xfe not utf8",
    b"caf\xc3\xa9",  # NFC e-acute
    b"cafe\xcc\x81",  # NFD e + combining acute
    "\u2028line separator".encode(),
    b"x" * 255,
    b"tab\tand\x01control",
]


@pytest.mark.parametrize("raw", HOSTILE, ids=repr)
def test_path_round_trips_exactly(raw: bytes) -> None:
    ev = events.file_event("created", "site", b"/srv/www", b"dir/" + raw, FileStat(1, 2, 3), "scan")
    line = events.encode(ev)
    assert line.endswith(b"\n") and line.count(b"\n") == 1  # one event, one line, whatever the name
    back = events.decode(line)
    assert events.get_path(back, "rel") == b"dir/" + raw
    assert events.get_path(back, "path") == b"/srv/www/dir/" + raw
    assert events.get_path(back, "root") == b"/srv/www"


def test_b64_only_for_names_that_are_not_utf8() -> None:
    good = events.file_event("created", "s", b"/r", "é.txt".encode(), FileStat(1, 2, 3), "scan")
    assert "rel_b64" not in good and good["rel"] == "é.txt"
    bad = events.file_event("created", "s", b"/r", b"\xe9.txt", FileStat(1, 2, 3), "scan")
    assert bad["rel_b64"] == "6S50eHQ=" and bad["rel"] == "\ufffd.txt"


def test_put_path_drops_stale_b64() -> None:
    ev: dict = {}
    events.put_path(ev, "path", b"\xff")
    events.put_path(ev, "path", b"ok")
    assert ev == {"path": "ok"}


def test_ids_are_stable_and_sensitive() -> None:
    a = events.event_id("s", b"a", "created", 1, 2, 3)
    assert a == events.event_id("s", b"a", "created", 1, 2, 3)
    assert len(a) == 32
    others = {
        events.event_id("t", b"a", "created", 1, 2, 3),
        events.event_id("s", b"b", "created", 1, 2, 3),
        events.event_id("s", b"a", "modified", 1, 2, 3),
        events.event_id("s", b"a", "created", 9, 2, 3),
        events.event_id("s", b"a", "created", 1, 9, 3),
        events.event_id("s", b"a", "created", 1, 2, 9),
    }
    assert a not in others and len(others) == 6


def test_mtime_ns_is_an_exact_string() -> None:
    ev = events.file_event("modified", "s", b"/r", b"f", FileStat(5, 1700000000123456789, 7), "inotify")
    assert ev["mtime_ns"] == "1700000000123456789"
    assert ev["mtime"] == pytest.approx(1700000000.123457)


def test_deleted_has_no_size_or_mtime() -> None:
    ev = events.file_event("deleted", "s", b"/r", b"f", FileStat(5, 6, 7), "scan")
    assert "size" not in ev and "mtime" not in ev and "mtime_ns" not in ev
    assert ev["id"] == events.event_id("s", b"f", "deleted", 5, 6, 7)


def test_root_slash() -> None:
    ev = events.file_event("created", "s", b"/", b"etc/x", FileStat(1, 2, 3), "scan")
    assert ev["path"] == "/etc/x"


def test_reader_reports_bad_lines_and_goes_on() -> None:
    good = events.encode({"v": 1, "kind": "created", "path": "/a", "extra": {"kept": True}})
    stream = io.BytesIO(
        good
        + b"not json\n"
        + b"[1,2]\n"
        + b'{"v":2,"kind":"created","path":"/x"}\n'
        + b'{"v":1,"kind":"renamed","path":"/x"}\n'
        + b'{"v":1,"kind":"created"}\n'
        + b"\n"
        + good
        + b'{"v":1,"kind":"created","path":"/torn"}'
    )
    bad: list[BadLine] = []
    good_events = list(events.events_from(stream, bad.append))
    assert len(good_events) == 2 and good_events[0]["extra"] == {"kept": True}  # unknown fields kept
    assert [b.lineno for b in bad] == [2, 3, 4, 5, 6, 9]
    assert "version" in bad[2].reason and "renamed" in bad[3].reason and "newline" in bad[-1].reason


def test_decode_rejects_lone_surrogates() -> None:
    with pytest.raises(EventError):
        events.get_path(json.loads('{"path": "\\udcff"}'), "path")
    with pytest.raises(EventError):
        events.get_path({"path_b64": "!!!"}, "path")


@pytest.mark.parametrize("raw", HOSTILE, ids=repr)
@pytest.mark.parametrize("kind", ["created", "modified", "deleted"])
@pytest.mark.parametrize("mtime_ns", [0, 1, 1_700_000_000_000_000_000, 1795560937740236003, -1_500_000_000])
def test_fast_encoder_agrees_with_the_general_one(raw: bytes, kind: str, mtime_ns: int) -> None:
    st = FileStat(123, mtime_ns, 456)
    for root in (b"/srv/www", b"/", b"/\xffroot", "/r\u00e9".encode()):
        fast = events.encode_file_event(kind, 'src "q"', root, raw, st, "inotify")
        general = events.encode(events.file_event(kind, 'src "q"', root, raw, st, "inotify"))
        assert fast.endswith(b"\n") and fast.count(b"\n") == 1
        assert json.loads(fast) == json.loads(general)
        assert list(json.loads(fast)) == list(json.loads(general))  # same field order too


def test_mtime_is_truncated_to_microseconds() -> None:
    assert events.mtime_seconds(1795560937740236999) == 1795560937.740236


def test_decode_judges_every_line_not_only_the_first_of_its_shape() -> None:
    """The type checks are cached per shape of event; the range checks and the rest still run on every line."""
    good = b'{"v":1,"kind":"created","path":"/a","size":%d,"mtime_ns":"%s","hop":{"from":"/w","epoch":"e","seq":%d}}'
    assert events.decode(good % (1, b"5", 1))["size"] == 1
    for line, why in [
        (good % (2**63, b"5", 1), "out of range"),
        (good % (1, b"99999999999999999999", 1), "mtime_ns"),
        (good % (1, b"5", 2**63), "hop.seq"),
        (
            b'{"v":1,"kind":"created","path":"/a","size":"1","mtime_ns":"5","hop":{"from":"/w","epoch":"e","seq":1}}',
            "size",
        ),
    ]:
        with pytest.raises(events.EventError, match=why):
            events.decode(line)


def test_decode_judges_events_with_many_fields_each_time() -> None:
    fields = ",".join(f'"f{i}":{i}' for i in range(100))
    assert len(events.decode(b'{"v":1,"kind":"created","path":"/a",%s}' % fields.encode())) == 103
    with pytest.raises(events.EventError, match="size"):
        events.decode(b'{"v":1,"kind":"created","path":"/a",%s,"size":-1}' % fields.encode())


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)
_TEXT = st.sampled_from(["", " ", "\n", "\t\r\n", "x", ",", "}", "\u2028", "\x0b", "1e400", "NaN"])


@given(_JSON, _TEXT, _TEXT, st.booleans())
def test_lines_parse_as_the_json_decoder_parses_them(value: object, before: str, after: str, pretty: bool) -> None:
    """events._parse scans a line directly when it is one JSON value with nothing but JSON white space after it,
    and hands anything else to the decoder: the same value, or a refusal, as json with the same hooks."""
    text = before + json.dumps(value, indent=1 if pretty else None) + after
    reference = json.JSONDecoder(parse_float=events._finite, parse_constant=events._no_constant)
    try:
        want = reference.decode(text)
    except ValueError:
        with pytest.raises(EventError, match="not valid JSON"):
            events._parse(text.encode())
        return
    assert events._parse(text.encode()) == want


_EVENT = st.dictionaries(st.text(max_size=4), _JSON, max_size=6)


@given(_EVENT)
def test_encode_writes_what_json_dumps_writes(event: dict) -> None:
    """encode keeps one C encoder for every line instead of json.dumps building one per call: the same bytes,
    floats, non-ASCII and control characters included."""
    want = json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n"
    assert events.encode(event) == want.encode("utf-8")


def test_encode_refuses_what_json_cannot_write() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        events.encode({"v": 1, "x": b"bytes"})


def _hop_refused(hop: object) -> bool:
    """What decode refuses in a ``hop``, as docs/events.md says it (from, epoch: strings; seq: an integer from 0 to
    MAX_INT; for: a list of strings; nothing nested deeper than the event may; null: as if absent)."""
    if hop is None:
        return False
    if type(hop) is not dict:
        return True
    seq, tag = hop.get("seq"), hop.get("for")
    return (
        type(hop.get("from")) is not str
        or type(hop.get("epoch")) is not str
        or type(seq) is not int
        or not 0 <= seq <= events.MAX_INT
        or (tag is not None and (type(tag) is not list or not all(type(t) is str for t in tag)))
    )


_HOP_VALUE = _JSON | st.integers(min_value=-1, max_value=2**64) | st.lists(st.text(max_size=3), max_size=2)
# the usual hop with its seq anywhere, a field changed, dropped or added; or any JSON at all
_USUAL_HOP = st.fixed_dictionaries(
    {"from": st.just("/w"), "epoch": st.just("e"), "seq": st.integers(min_value=-2, max_value=2**64)}
)
_HOP = (
    _USUAL_HOP
    | _USUAL_HOP.flatmap(
        lambda hop: st.tuples(
            st.just(hop), st.sampled_from(["from", "epoch", "seq", "for", "x"]), _HOP_VALUE, st.booleans()
        )
    ).map(lambda t: {k: v for k, v in {**t[0], t[1]: t[2]}.items() if not (t[3] and k == t[1])})
    | st.dictionaries(st.sampled_from(["from", "epoch", "seq", "for", "x"]), _HOP_VALUE, max_size=5)
    | _JSON
)


@given(_HOP)
def test_decode_refuses_a_bad_hop_whatever_its_shape(hop: object) -> None:
    """The usual hop (exactly from, epoch and seq) is judged the short way, every other the long way: together,
    exactly what the protocol refuses."""
    line = json.dumps({"v": 1, "kind": "created", "path": "/a", "hop": hop}).encode() + b"\n"
    if _hop_refused(hop):
        with pytest.raises(EventError, match=r"hop|nested|JSON"):
            events.decode(line)
    else:
        assert events.decode(line)["hop"] == hop


@pytest.mark.parametrize(
    "fields, want",
    [
        ({"path": "/a/\u00e9"}, "/a/\u00e9".encode()),
        ({"path_b64": "L2Ev/w=="}, b"/a/\xff"),
        ({"path": "/a/?", "path_b64": "L2Ev/w=="}, b"/a/\xff"),
        ({}, None),
        ({"path_b64": "not base64!"}, None),
        ({"path": "/a", "path_b64": "not base64!"}, None),
        ({"path": 7}, None),
        ({"path": None}, None),
    ],
)
def test_decode_takes_a_path_by_its_bytes_or_refuses_it(fields: dict, want: bytes | None) -> None:
    """A path that is a plain string (no path_b64) is taken as it is; any other goes through get_path."""
    line = json.dumps({"v": 1, "kind": "created", **fields}).encode() + b"\n"
    if want is None:
        with pytest.raises(EventError, match="path"):
            events.decode(line)
    else:
        assert events.get_path(events.decode(line), "path") == want


@pytest.mark.parametrize("field", ["root", "path", "rel", "name", "file", "remote"])
def test_a_name_field_holding_a_nul_byte_is_refused(field: str) -> None:
    # no file is named with a NUL byte: taken, such a line failed later, where the name met the system
    ev = {"v": 1, "kind": "created", "root": "/r", "path": "/r/a", "rel": "a", field: "x\0y"}
    with pytest.raises(EventError, match=f"field {field} holds a NUL byte"):
        events.decode(json.dumps(ev).encode())
    ev.pop(field) if field not in ("root", "path", "rel") else ev.update({field: "/r/a" if field == "path" else "a"})
    ev[field + "_b64"] = "eABZ"  # x NUL Y
    with pytest.raises(EventError, match=f"field {field}_b64 holds a NUL byte"):
        events.decode(json.dumps(ev).encode())
    ev[field + "_b64"] = "not base64!"
    with pytest.raises(EventError, match=f"field {field}_b64 is not valid base64"):
        events.decode(json.dumps(ev).encode())


def test_a_known_field_that_is_null_is_absent() -> None:
    ev = events.decode(b'{"v":1,"kind":"created","root":"/r","path":"/r/a","rel":"a","name":null,"size":null,"x":null}')
    assert "name" not in ev and "size" not in ev and ev["x"] is None  # (an unknown field is passed on as it is)


def test_a_resend_line_is_no_file_event_and_needs_no_hop() -> None:
    assert events.decode(events.RESEND_LINE) == {"v": 1, "kind": "resend"}
    with pytest.raises(EventError):  # a hop, when there, is checked as any line's
        events.decode(b'{"v":1,"kind":"resend","hop":{"from":1}}\n')
