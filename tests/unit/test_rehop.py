"""Lines passed through (issue 18, ranked change 5): a stage that does not change an event writes the line it
read with only its ``hop`` replaced (events.rehop), not the event encoded again; and where that cannot be done
exactly, the event is encoded as before."""

from __future__ import annotations

import io
import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from fileconveyor import events as E
from fileconveyor.cli._common import Reporter, Stopper
from fileconveyor.delivery.runner import Options, Runner
from fileconveyor.stages.filter.stage import Conditions, FilterStage

NEW = {"from": "/s/f.db", "epoch": "e2", "seq": 7}
OLD = {"from": "/s/w.db", "epoch": "e1", "seq": 3}


def test_the_hop_is_replaced_and_the_rest_passes_as_read() -> None:
    line = (
        b'{"v":1,"kind":"created","path":"/r/caf\\u00e9","x":[1.50,{"y":null}],"hop":'
        + json.dumps(OLD, separators=(",", ":")).encode()
        + b"}\n"
    )
    out = E.rehop(line, E.decode(line)["hop"], NEW)
    assert out is not None and out.startswith(b'{"v":1,"kind":"created","path":"/r/caf\\u00e9","x":[1.50,{"y":null}],')
    assert E.decode(out) == {**E.decode(line), "hop": NEW}


def test_a_line_without_hop_gets_one() -> None:
    line = b'{"v":1,"kind":"created","path":"/r/a"}\n'
    out = E.rehop(line, E.MISSING, NEW)
    assert out is not None and E.decode(out) == {"v": 1, "kind": "created", "path": "/r/a", "hop": NEW}


def test_anything_else_is_encoded_again() -> None:
    hop_first = b'{"hop":' + json.dumps(OLD, separators=(",", ":")).encode() + b',"v":1,"kind":"created","path":"/a"}\n'
    nested_last = b'{"v":1,"kind":"created","path":"/a","hop":' + json.dumps(OLD).encode() + b"}\n"  # spaces
    assert E.rehop(hop_first, OLD, NEW) is None
    assert E.rehop(nested_last, OLD, NEW) is None
    assert E.rehop(b'{"v":1,"kind":"created","path":"/a","hop":null}\n', None, NEW) is None
    assert E.rehop(b'{"v":1,"kind":"created","path":"/a"}', E.MISSING, NEW) is None  # no newline


def test_fc_filter_passes_the_line_it_read(tmp_path: Path) -> None:
    # JSON that an encoder would write differently: an escaped non-ASCII name, a float with a trailing zero
    line = b'{"v":1,"id":"i","kind":"created","source":"s","root":"/r","path":"/r/caf\\u00e9.bin","n":2.50}\n'
    out = io.BytesIO()
    stage = FilterStage(Conditions(extensions=["bin"]))
    opts = Options(state_path=tmp_path / "f.db")
    status = Runner(stage, opts, io.BytesIO(line), out, Reporter("fc-filter", io.StringIO()), Stopper()).run()
    assert status == 0
    written = out.getvalue()
    assert written.startswith(line[:-2] + b',"hop":{')  # as read, the hop added at its end
    assert E.decode(written)["path"] == "/r/café.bin"


def test_fc_record_passes_the_line_it_read(tmp_path: Path) -> None:
    from fileconveyor.cli.record import main
    from tests.conftest import call

    line = (
        b'{"v":1,"id":"i","kind":"created","source":"s","root":"/r","path":"/r/caf\\u00e9.bin","rel":"caf\\u00e9.bin",'
        b'"server":"srv","url":"http://cdn/caf\\u00e9.bin","transported":"uploaded","n":2.50}\n'
    )
    got = call(main, ["--db", str(tmp_path / "synced.db"), "--state", str(tmp_path / "r.db")], line)
    assert got.status == 0, got.stderr
    assert got.stdout.startswith(line[:-2] + b',"hop":{')  # recorded, and passed on as read


@given(
    st.text(),
    st.text(),
    st.integers(min_value=0, max_value=E.MAX_INT),
    st.one_of(st.none(), st.lists(st.text(), max_size=3)),
    st.booleans(),
)
def test_a_hop_is_written_as_the_json_encoder_writes_it(origin: str, epoch: str, seq: int, tag, reorder: bool) -> None:
    """hop_json builds the usual hop from its writer's cached part: byte for byte what json.dumps writes, for
    any names (non-ASCII, quotes, control characters), and any other shape (a tag, another order) encoded."""
    hop: dict = {"from": origin, "epoch": epoch, "seq": seq}
    if tag is not None:
        hop["for"] = tag
    if reorder:
        hop = dict(reversed(hop.items()))
    want = json.dumps(hop, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    assert E.hop_json(hop) == want
    assert E.hop_json(hop) == want  # the second time from the cache
    odd = {**hop, "seq": True}  # a bool is no seq: encoded as it is
    assert E.hop_json(odd) == json.dumps(odd, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def test_a_stages_own_hop_from_its_cached_head_is_the_hop_as_encoded() -> None:
    """Commit writes its own hops from events.hop_head and the seq (not hop_json's checks per line): the same
    bytes, and the line decodes to the event with the new hop."""
    line = b'{"v":1,"kind":"created","path":"/r/a","hop":' + json.dumps(OLD, separators=(",", ":")).encode() + b"}\n"
    own = b"%s%d}" % (E.hop_head(NEW["from"], NEW["epoch"]), NEW["seq"])
    assert own == E.hop_json(NEW) == json.dumps(NEW, separators=(",", ":")).encode()
    out = E.rehop(line, E.decode(line)["hop"], NEW, hop_bytes=own)
    assert out == E.rehop(line, E.decode(line)["hop"], NEW)
    assert out is not None and E.decode(out) == {**E.decode(line), "hop": NEW}


@given(st.lists(st.one_of(st.text(), st.integers(), st.none(), st.lists(st.text(), max_size=2)), max_size=4))
def test_added_members_are_written_as_the_json_encoder_writes_them(value: list) -> None:
    """members writes a list of strings (fc-process's ``processed``) without the encoder: byte for byte what
    json.dumps writes, for any strings; any other list as the encoder writes it."""
    ev = {"processed": value, "name": "a b.txt"}
    want = "," + json.dumps(ev, ensure_ascii=False, separators=(",", ":"))[1:-1]
    assert E.members(ev, ("processed", "name")) == want.encode("utf-8")


_SHAPES = st.sampled_from(["last", "first", "spaced", "tagged", "nested", "none", "twice"])


@given(st.text(), st.text(), st.integers(min_value=0, max_value=E.MAX_INT), _SHAPES, st.text(max_size=5))
def test_swap_hop_cuts_a_line_exactly_where_rehop_does(origin: str, epoch: str, seq: int, shape: str, x: str) -> None:
    """Commit passes a line on by its bytes (events.swap_hop, with the hop the reader took from it) before
    anything else: for any names and any shape of line, it gives rehop's line, or None where the hop is not
    the line's last member in the usual shape, and never cuts a line whose hop is elsewhere or another."""
    hop = {"from": origin, "epoch": epoch, "seq": seq}
    body = '{"v":1,"kind":"created","path":"/r/a","x":' + json.dumps(x, ensure_ascii=False)
    enc = json.dumps(hop, ensure_ascii=False, separators=(",", ":"))
    lines = {
        "last": body + ',"hop":' + enc + "}\n",
        "first": '{"hop":' + enc + "," + body[1:] + "}\n",
        "spaced": body + ',"hop":' + json.dumps(hop, ensure_ascii=False) + "}\n",
        "tagged": body + ',"hop":' + json.dumps({**hop, "for": ["s"]}, separators=(",", ":")) + "}\n",
        "nested": body + ',"y":{"hop":' + enc + "}}\n",
        "none": body + "}\n",
        "twice": '{"hop":{"from":"/f","epoch":"e","seq":1},' + body[1:] + ',"hop":' + enc + "}\n",
    }
    line = lines[shape].encode("utf-8")
    ev = E.decode(line)
    old_head = b',"hop":' + E.hop_head(origin, epoch)
    tail = b',"hop":' + E.hop_json(NEW) + b"}\n"
    got = E.swap_hop(line, old_head, seq, tail, b',"n":1')
    if shape in ("last", "twice"):
        assert got == E.rehop(line, ev["hop"], NEW, b',"n":1') and got is not None
        assert E.decode(got) == {**ev, "n": 1, "hop": NEW}
    else:
        assert got is None
    # a hop the line does not end with (another seq, another writer) never cuts it
    assert E.swap_hop(line, old_head, seq + 1, tail) is None
    assert E.swap_hop(line, b',"hop":' + E.hop_head(origin + "x", epoch), seq, tail) is None
