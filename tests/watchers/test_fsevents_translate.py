"""The FSEvents backend on a system without FSEvents.

translate() is checked against FSEvents records kept as fixtures; the backend's
plumbing (observer thread -> queue -> pipe -> hints) against a stand-in for
macfsevents that has its API: Stream(callback, *str_paths, **options), and an
Observer thread that calls ``callback(path, flags)`` once per record.
"""

from __future__ import annotations

import functools
import io
import json
import operator
import os
import queue
import select
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from fileconveyor.delivery.writer import stdout_writer
from fileconveyor.errors import ConfigError, Exit
from fileconveyor.events import decode, get_path
from fileconveyor.stages.watch.stage import Core, Options, Source
from fileconveyor.stages.watch.state import WatchState
from fileconveyor.watchers import fsevents as fse_mod
from fileconveyor.watchers.base import make_backend
from fileconveyor.watchers.fsevents import CreateFlag, EventFlag, FSEventsBackend, translate
from fileconveyor.watchers.tree import Filters

FIXTURES = Path(__file__).parent / "fixtures" / "fsevents"
LIB = Path(__file__).resolve().parents[2] / "lib"

# Copied by hand from Apple's <CoreServices/FSEvents.h>, not from the module under test.
APPLE_EVENT_FLAGS = {
    "MustScanSubDirs": 0x00000001,
    "UserDropped": 0x00000002,
    "KernelDropped": 0x00000004,
    "EventIdsWrapped": 0x00000008,
    "HistoryDone": 0x00000010,
    "RootChanged": 0x00000020,
    "Mount": 0x00000040,
    "Unmount": 0x00000080,
    "ItemCreated": 0x00000100,
    "ItemRemoved": 0x00000200,
    "ItemInodeMetaMod": 0x00000400,
    "ItemRenamed": 0x00000800,
    "ItemModified": 0x00001000,
    "ItemFinderInfoMod": 0x00002000,
    "ItemChangeOwner": 0x00004000,
    "ItemXattrMod": 0x00008000,
    "ItemIsFile": 0x00010000,
    "ItemIsDir": 0x00020000,
    "ItemIsSymlink": 0x00040000,
    "OwnEvent": 0x00080000,
    "ItemIsHardlink": 0x00100000,
    "ItemIsLastHardlink": 0x00200000,
    "ItemCloned": 0x00400000,
}
APPLE_CREATE_FLAGS = {"UseCFTypes": 0x1, "NoDefer": 0x2, "WatchRoot": 0x4, "IgnoreSelf": 0x8, "FileEvents": 0x10}


# -- fixtures --------------------------------------------------------------------------


def _b(text: str) -> bytes:
    """Fixture text to path bytes: \\udcXX stands for a byte that is not UTF-8."""
    return text.encode("utf-8", "surrogateescape")


def _flags(value: int | list[str]) -> int:
    if isinstance(value, int):
        return value
    return functools.reduce(operator.or_, (int(EventFlag[name]) for name in value), 0)


def _hint(item: list[Any]) -> tuple[Any, ...]:
    if item[0] in ("dirty", "rescan"):
        return (item[0], _b(item[1]), *item[2:])
    return tuple(item)


def _records() -> Iterator[Any]:
    for path in sorted(FIXTURES.glob("*.jsonl")):
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip() and not line.startswith("#"):
                rec = json.loads(line)
                yield pytest.param(rec, id=f"{path.stem}:{lineno}:{rec['name']}")


RECORDS = list(_records())


class _NoDisk:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"translate() used os.{name}: it must not look at the disk")


@pytest.fixture
def no_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """translate() must be pure: the module's ``os`` refuses every use while it runs."""
    monkeypatch.setattr(fse_mod, "os", _NoDisk())


@pytest.mark.parametrize("rec", RECORDS)
def test_translate(rec: dict[str, Any], no_disk: None) -> None:
    got = translate(_b(rec["root"]), _b(rec["path"]), _flags(rec["flags"]))
    assert got == [_hint(h) for h in rec["expect"]]


def test_every_fixture_file_has_records() -> None:
    per_file = {p.stem: 0 for p in FIXTURES.glob("*.jsonl")}
    for param in RECORDS:
        per_file[param.id.split(":")[0]] += 1
    assert set(per_file) == {"files", "dirs", "stream", "roots"}
    assert all(n >= 5 for n in per_file.values()), per_file


def test_flag_values_are_apples() -> None:
    assert {f.name: f.value for f in EventFlag} == APPLE_EVENT_FLAGS
    assert {f.name: f.value for f in CreateFlag} == APPLE_CREATE_FLAGS


def test_values_seen_on_macs_decompose_into_the_named_flags() -> None:
    seen = [p.values[0] for p in RECORDS if "seen" in p.values[0]]
    assert len(seen) >= 4
    for rec in seen:
        names = rec["seen"].split(": ", 1)[1].split("|")
        assert _flags(names) == rec["flags"], rec["name"]


# -- without macfsevents ---------------------------------------------------------------


def test_module_imports_without_macfsevents() -> None:
    # sys.modules["fsevents"] = None makes "import fsevents" fail, as on Linux, even
    # where macfsevents happens to be installed: a top-level import would show here.
    code = (
        "import sys; sys.modules['fsevents'] = None\n"
        "import fileconveyor.watchers.fsevents as m\n"
        "print(m.FSEventsBackend.name, m.translate(b'/r', b'/r/a', 0x10100))"
    )
    env = {**os.environ, "PYTHONPATH": str(LIB)}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "fsevents [('dirty', b'a', None)]"


def test_backend_without_macfsevents_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "fsevents", None)
    with pytest.raises(ConfigError) as info:
        make_backend("fsevents", FakeCore([Source("s", os.fsencode(tmp_path))]), FakeReporter(), 1.0)
    assert str(info.value) == "the fsevents backend needs macfsevents: pip install macfsevents"
    assert info.value.exit == Exit.CONFIG


def test_backend_refuses_macfsevents_without_create_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    old = types.ModuleType("fsevents")  # before 0.5: no FS_CFLAG*, Stream took no flags
    old.Stream, old.Observer = FakeStream, FakeObserver  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fsevents", old)
    with pytest.raises(ConfigError, match=r"macfsevents 0\.8 or later"):
        FSEventsBackend(FakeCore([]), FakeReporter(), 1.0)


# -- the backend, against a stand-in for macfsevents ------------------------------------


class FakeStream:
    """fsevents.Stream: paths must be str, and are kept UTF-8 encoded for the C side."""

    def __init__(self, callback: Any, *paths: str, **options: Any):
        for p in paths:
            if not isinstance(p, str):
                raise TypeError(f"Path must be string, not '{type(p).__name__}'.")
        self.callback = callback
        self.paths = [p.encode("utf-8") for p in paths]
        self.options = options


class FakeObserver(threading.Thread):
    """fsevents.Observer: a thread running the scheduled streams until stop()."""

    fail: ClassVar[BaseException | None] = None
    instances: ClassVar[list[FakeObserver]] = []

    def __init__(self) -> None:
        super().__init__()
        self.streams: list[FakeStream] = []
        self.inbox: queue.Queue[tuple[str, int] | None] = queue.Queue()
        FakeObserver.instances.append(self)

    def schedule(self, stream: FakeStream) -> None:
        self.streams.append(stream)

    def unschedule(self, stream: FakeStream) -> None:
        self.streams.remove(stream)

    def stop(self) -> None:
        self.inbox.put(None)

    def run(self) -> None:
        if self.fail is not None:
            raise self.fail
        while (item := self.inbox.get()) is not None:
            for stream in self.streams:
                stream.callback(*item)

    def deliver(self, path: Path | str, *flags: str) -> None:
        """A record as FSEvents would report it, on this thread."""
        self.inbox.put((str(path), _flags(list(flags))))


class FakeCore:
    def __init__(self, sources: list[Source], filters: Filters | None = None):
        for i, src in enumerate(sources):
            src.index = i
        self.sources = sources
        self.filters = filters or Filters()
        self.calls: list[tuple[Any, ...]] = []
        self.via = self.scan_via = ""
        self.between_batches: Any = None
        self.dir_hook: Any = None

    def scan(self, src: Source, rel_dir: bytes = b"") -> None:
        self.calls.append(("scan", src.name, rel_dir))
        if self.between_batches is not None:  # as Core does after each batch of a scan
            self.between_batches()

    def dirty(self, src: Source, rel: bytes, closed: bool | None, now: float | None = None) -> None:
        self.calls.append(("dirty", src.name, rel, closed))

    def rescan(self, src: Source, rel_dir: bytes) -> None:
        self.calls.append(("rescan", src.name, rel_dir))

    def rescan_all(self) -> None:
        self.calls.append(("rescan_all",))


class FakeReporter:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warn(self, text: str) -> None:
        self.warnings.append(text)

    def warn_once(self, key: str, text: str) -> None:
        self.warn(text)


@pytest.fixture
def fake_macfsevents(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeObserver]]:
    mod = types.ModuleType("fsevents")
    mod.Stream, mod.Observer, mod.FS_CFLAGFILEEVENTS = FakeStream, FakeObserver, 0x10  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fsevents", mod)
    FakeObserver.instances = []
    FakeObserver.fail = None
    yield FakeObserver
    for obs in FakeObserver.instances:
        obs.inbox.put(None)


def _process_until(backend: FSEventsBackend, core: FakeCore, count: int) -> None:
    """Wait on fileno() like run_live, then process, until ``count`` calls were made."""
    while len(core.calls) < count:
        readable, _, _ = select.select([backend.fileno()], [], [], 5)
        assert readable, f"records waiting but fileno() never became readable: {core.calls}"
        backend.process()


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    real = tmp_path / "real"
    for d in ("site/docs", "site2"):
        (real / d).mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    return {"real": real, "link": tmp_path / "link"}


def test_records_from_the_observer_thread_become_hints(
    fake_macfsevents: type[FakeObserver], tree: dict[str, Path]
) -> None:
    real, link = tree["real"], tree["link"]
    sources = [
        Source("site", os.fsencode(link / "site")),  # through a symlink: FSEvents reports the real path
        Source("docs", os.fsencode(real / "site/docs")),  # nested in site
        Source("site2", os.fsencode(real / "site2")),  # shares a prefix with site
    ]
    core = FakeCore(sources, Filters.build(["node_modules"], []))
    backend = FSEventsBackend(core, FakeReporter(), 1.0)
    backend.start()
    assert core.calls == [("scan", "site", b""), ("scan", "docs", b""), ("scan", "site2", b"")]
    assert core.via == "fsevents"

    (obs,) = fake_macfsevents.instances
    (stream,) = obs.streams
    assert stream.paths == [os.fsencode(real / "site"), os.fsencode(real / "site2")]  # nested one left out
    assert stream.options["flags"] & (CreateFlag.FileEvents | CreateFlag.WatchRoot) == 0x14
    assert obs.daemon and obs.is_alive()

    core.calls.clear()
    obs.deliver(real / "site/docs/a.md", "ItemCreated", "ItemIsFile")
    obs.deliver(real / "site2/gone.txt", "ItemRemoved", "ItemIsFile")
    obs.deliver(real / "site/img", "ItemCreated", "ItemIsDir")
    obs.deliver(real / "site/node_modules/pkg", "ItemCreated", "ItemIsDir")  # excluded: no rescan
    obs.deliver(tree["link"].parent / "elsewhere/x", "ItemCreated", "ItemIsFile")  # in no source
    obs.deliver(real / "site2/last", "ItemModified", "ItemIsFile")  # records keep their order: all seen
    _process_until(backend, core, 5)
    assert core.calls == [
        ("dirty", "site", b"docs/a.md", None),
        ("dirty", "docs", b"a.md", None),
        ("dirty", "site2", b"gone.txt", True),
        ("rescan", "site", b"img"),
        ("dirty", "site2", b"last", None),
    ]

    core.calls.clear()
    obs.deliver("/", "MustScanSubDirs", "KernelDropped")
    _process_until(backend, core, 1)
    assert core.calls == [("rescan_all",)]  # once, not once per source
    assert "dropped" in backend.reporter.warnings[-1]  # type: ignore[attr-defined]

    rfd = backend.fileno()
    assert rfd is not None
    backend.close()
    assert not obs.is_alive()
    with pytest.raises(OSError):
        os.fstat(rfd)


def test_records_queued_during_the_catch_up_scan_are_handed_out_between_batches(
    fake_macfsevents: type[FakeObserver], tmp_path: Path
) -> None:
    core = FakeCore([Source("a", os.fsencode(tmp_path / "a")), Source("b", os.fsencode(tmp_path / "b"))])
    backend = FSEventsBackend(core, FakeReporter(), 1.0)
    backend._on_record(str(tmp_path / "b/new.txt"), int(EventFlag.ItemCreated | EventFlag.ItemIsFile))
    backend.start()
    assert core.calls == [("scan", "a", b""), ("dirty", "b", b"new.txt", None), ("scan", "b", b"")]
    backend.close()


def test_observer_that_dies_turns_into_polling(fake_macfsevents: type[FakeObserver], tmp_path: Path) -> None:
    fake_macfsevents.fail = RuntimeError("run loop stopped")
    core = FakeCore([Source("s", os.fsencode(tmp_path))])
    reporter = FakeReporter()
    backend = FSEventsBackend(core, reporter, 0.1)
    assert backend.next_due() is None
    backend.start()
    # The dying thread wakes the main loop; the catch-up scan may see it first, between batches.
    while not reporter.warnings:
        assert select.select([backend.fileno()], [], [], 5)[0], "the observer died without waking us"
        backend.process()
    assert core.calls == [("scan", "s", b""), ("rescan_all",)]
    assert "polling" in reporter.warnings[0] and "run loop stopped" in reporter.warnings[0]
    due = backend.next_due()
    assert due is not None
    time.sleep(max(0.0, due - time.monotonic()) + 0.01)
    backend.process()
    assert core.calls == [("scan", "s", b""), ("rescan_all",), ("rescan_all",)]
    backend.close()


def test_too_many_waiting_records_cost_one_rescan(
    fake_macfsevents: type[FakeObserver], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(fse_mod, "MAX_QUEUED", 3)
    core = FakeCore([Source("s", os.fsencode(tmp_path))])
    reporter = FakeReporter()
    backend = FSEventsBackend(core, reporter, 1.0)
    for i in range(10):
        backend._on_record(str(tmp_path / f"f{i}"), int(EventFlag.ItemCreated | EventFlag.ItemIsFile))
    assert select.select([backend.fileno()], [], [], 0)[0]  # one byte woke us, not ten
    backend.process()
    assert core.calls == [("rescan_all",)]  # the queued records are covered by it
    assert "rescanning every source" in reporter.warnings[0]
    backend.process()
    assert core.calls == [("rescan_all",)]
    assert not select.select([backend.fileno()], [], [], 0)[0]
    backend.close()


def test_hints_reach_the_real_core_as_events(fake_macfsevents: type[FakeObserver], tmp_path: Path) -> None:
    root = tmp_path / "site"
    (root / "old").mkdir(parents=True)
    (root / "old/a.txt").write_text("a")
    out = io.BytesIO()
    state = WatchState(tmp_path / "w.db", stdout_writer(out))
    core = Core([Source("site", os.fsencode(root))], state, Filters(), Options(settle=0))
    backend = FSEventsBackend(core, FakeReporter(), 1.0)
    try:
        backend.start()  # catch-up scan: old/a.txt is new to the state
        (obs,) = fake_macfsevents.instances
        (root / "new.txt").write_text("n")
        (root / "old").rename(root / "moved")
        obs.deliver(root / "new.txt", "ItemCreated", "ItemModified", "ItemIsFile")
        obs.deliver(root / "old", "ItemRenamed", "ItemIsDir")
        obs.deliver(root / "moved", "ItemRenamed", "ItemIsDir")
        deadline = time.monotonic() + 5
        while out.getvalue().count(b"\n") < 4 and time.monotonic() < deadline:
            select.select([backend.fileno()], [], [], 0.2)
            backend.process()
            core.tick()
    finally:
        backend.close()
        state.close()
    events = [decode(line) for line in out.getvalue().splitlines()]
    got = sorted((e["kind"], get_path(e, "rel"), e["via"]) for e in events)
    assert got == [
        ("created", b"moved/a.txt", "scan"),
        ("created", b"new.txt", "fsevents"),
        ("created", b"old/a.txt", "scan"),
        ("deleted", b"old/a.txt", "scan"),
    ]
