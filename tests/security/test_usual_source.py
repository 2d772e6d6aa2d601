"""fc-transport's main thread checks the usual event's root, rel and path in one pass (sourcefile.usual_source,
issue 18): it must take exactly what from_event's field-by-field checks take, and give the same Source and remote
name, or leave the event to them (which refuse it, saying why, or take it)."""

from __future__ import annotations

from unittest import mock

from hypothesis import example, given
from hypothesis import strategies as st

from fileconveyor import sourcefile
from fileconveyor.sourcefile import SourceRefused, from_event, usual_source
from fileconveyor.stages.transport.dest import targets_from
from fileconveyor.stages.transport.stage import TransportStage, remote_path
from fileconveyor.transporters import PermanentError

STEPS = st.sampled_from(["a", "b.css", "", ".", "..", "\0", "é", "\ud800", " ", ".x", "x."])
PATHS = st.lists(STEPS, max_size=4).map("/".join)
ROOTS = st.sampled_from(["/srv", "/srv/", "/", "//srv", "/srv/.", "/srv/..", "/a/.b", "srv", "/s\0", "/a/./b", "/é"])


def _general(ev: dict) -> tuple[bytes, object] | None:
    """from_event's own checks (usual_source taken out), with the remote name fc-transport gives the event."""
    with mock.patch.object(sourcefile, "usual_source", lambda ev: None):
        try:
            src = from_event(ev)
        except (SourceRefused, ValueError):  # (EventError: a field that is no valid Unicode)
            return None
    try:
        remote = remote_path(ev)
    except (PermanentError, ValueError):
        return None
    return remote, src


@given(ROOTS, PATHS, st.sampled_from(["join", "double", "other", "bare"]))
@example("/srv", "a/../b.css", "join")
@example("/srv/..", "b.css", "join")
@example("/srv", "a//b.css", "join")
@example("/srv", "\ud800", "join")
def test_the_one_pass_takes_what_the_field_checks_take(root: str, rel: str, how: str) -> None:
    path = {"join": f"{root}/{rel}", "double": f"{root}//{rel}", "other": f"/elsewhere/{rel}", "bare": root + rel}[how]
    ev = {"v": 1, "kind": "created", "root": root, "rel": rel, "path": path, "size": 3, "ino": 7}
    usual = usual_source(ev)
    if usual is None:
        return  # left to from_event's checks: what they say stands
    want = _general(ev)
    assert want is not None, f"the one pass took {ev} that the field checks refuse"
    raw_path, src = usual
    assert (src.rel, src) == want  # the remote name is the rel, the Source the one from_event gives
    assert raw_path == path.encode() == src.path


def test_the_usual_event_takes_the_one_pass() -> None:
    ev = {"v": 1, "kind": "created", "root": "/srv", "rel": "d/a.css", "path": "/srv/d/a.css", "size": 3, "ino": 7}
    assert usual_source(ev) == (b"/srv/d/a.css", from_event(ev))
    for other in ({"rel_b64": "ZA=="}, {"path_b64": "Lw=="}, {"file": "/x.work/a"}, {"root": b"/srv"}):
        assert usual_source({**ev, **other}) is None  # for from_event's field-by-field checks


NAMES = st.one_of(st.none(), STEPS, st.sampled_from(["b.css", "a", "x/y", 7]))


@given(ROOTS, PATHS, NAMES, st.booleans())
@example("/srv", "d/a.css", "a.css", True)
@example("/srv", "d/a.css", "b.css", True)
@example("/srv", "d/a.css", "..", True)
@example("/srv", "d/a.css", None, True)
def test_fc_transport_names_the_usual_event_as_the_field_checks_do(
    root: str, rel: str, name: object, has: bool
) -> None:
    """The remote name and the file fc-transport takes from an event (fc-process's "name" included) are what
    remote_path and from_event give, or the same refusal."""
    ev = {"v": 1, "kind": "created", "root": root, "rel": rel, "path": f"{root}/{rel}", "size": 3, "ino": 7}
    if has:
        ev["name"] = name
    stage = TransportStage(targets_from([("to", "file:///nonexistent/dest")]))

    def outcome(names_of: object) -> object:
        try:
            remote, src = names_of(ev, "created")  # type: ignore[operator]
        except (PermanentError, SourceRefused) as exc:
            return type(exc), str(exc)
        except ValueError as exc:  # EventError: as before, the runner's to report
            return ValueError, str(exc)
        return remote, src

    def general(ev: dict, kind: str) -> tuple[bytes, object]:
        with mock.patch.object(sourcefile, "usual_source", lambda ev: None):
            return remote_path(ev), stage._source(ev)

    assert outcome(stage._names_of) == outcome(general)
