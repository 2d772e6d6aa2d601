"""Golden NDJSON fixtures: one case per processor, through the whole fc-process command.

Each case is ``fixtures/golden/<case>.args`` (the flags), ``<case>.in.jsonl`` and
``<case>.out.jsonl``.  ``@SRC@`` stands for fixtures/src; in the output, a
``file`` in the work directory is written ``@WORK@/<its name there>`` and gets an
``@file_size``; ``hop`` is dropped and an error's message is cut to its first
words (tools word their errors differently across versions).  Outputs are put in
input order (by ``id``): different paths may leave in any order.

New case: add the .args and .in.jsonl files and run
``FC_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/process/test_golden.py``, then
read the .out.jsonl it wrote before committing it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from pathlib import Path

import pytest

from tests.conftest import require_tool, work_dir_for

from .conftest import FIXTURES, SRC, run, work_root

GOLDEN = FIXTURES / "golden"
CASES = sorted(p.name.removesuffix(".in.jsonl") for p in GOLDEN.glob("*.in.jsonl"))
TOOLS = {
    "image": ["jpegtran", "optipng", "gifsicle"],
    "chain_optimise": ["jpegtran", "optipng", "gifsicle"],
    "yui": ["yui-compressor"],
    "closure": ["closure-compiler"],
}


def normalise(ev: dict, work: Path) -> dict:
    ev = dict(ev)
    ev.pop("hop", None)
    src, wroot = str(SRC), str(work)
    for key in ("root", "path", "file"):
        value = ev.get(key)
        if isinstance(value, str) and value.startswith(src):
            ev[key] = "@SRC@" + value[len(src) :]
        elif isinstance(value, str) and value.startswith(wroot + "/"):
            assert os.path.isfile(value), f"{key} {value} is missing"
            ev["@file_size"] = os.path.getsize(value)
            ev[key] = "@WORK@/" + value[len(wroot) + 1 :].split("/", 1)[1]  # without the per-event directory
    if isinstance(ev.get("error"), str):
        ev["error"] = " ".join(ev["error"].split()[:2]) + " ..."
    return ev


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, tmp_path: Path) -> None:
    for prefix, tools in TOOLS.items():
        if case.startswith(prefix):
            for tool in tools:
                require_tool(tool)
    argv = shlex.split((GOLDEN / f"{case}.args").read_text())
    # @EARLIER@: an earlier fc-process's work folder (beside ours, under the same --work-dir), holding copies of
    # the text fixtures: fc-process takes a "file" only from such a folder (lib/fileconveyor/sourcefile.py)
    # (in the directory it made for the event that names it: a file is taken only from there)
    text = ""
    for line in (GOLDEN / f"{case}.in.jsonl").read_text().replace("@SRC@", str(SRC)).splitlines(keepends=True):
        if "@EARLIER@" in line:
            ev = json.loads(line)
            earlier = work_dir_for(tmp_path / "work" / "earlier.db.work", ev["path"], ev["rel"], make=False)
            shutil.copytree(SRC / "text", earlier, dirs_exist_ok=True)
            line = line.replace("@EARLIER@", str(earlier))
        text += line
    inputs = [json.loads(line) for line in text.splitlines()]
    res = run(tmp_path, argv, text.encode())
    assert res.status in (0, 1), res.stderr
    order = {ev["id"]: i for i, ev in enumerate(inputs)}
    got = sorted(
        (normalise(json.loads(line), work_root(tmp_path)) for line in res.stdout.splitlines()),
        key=lambda e: order[e["id"]],
    )
    expected_file = GOLDEN / f"{case}.out.jsonl"
    rendered = "".join(json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n" for e in got)
    if os.environ.get("FC_UPDATE_GOLDEN"):
        expected_file.write_text(rendered)
    assert rendered == expected_file.read_text(), res.stderr
    # the exit status says whether some event failed
    assert res.status == (1 if any(e.get("error_kind") and "fc-other" not in e["error"] for e in got) else 0)
