"""One fc-verify run: checks every row, counts, and keeps what --repair and --find-extra need."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from ... import events as E
from ...records import Reader
from .stage import Finding, Verifier, extra_files, processed_names, read_rows, repair_event, run_checks


@dataclass
class Run:
    verifier: Verifier
    repair: bool = False
    total: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    unfixable: int = 0  # problem files no event can repair
    processed: int = 0  # repaired files whose remote copy was made by processors
    _by_path: dict[bytes, list[Finding]] = field(default_factory=dict)
    _known: dict[str, set[bytes]] = field(default_factory=dict)

    def check(
        self, db: Reader, servers: Sequence[str], jobs: int, stopped: Callable[[], bool]
    ) -> Iterator[dict | None]:
        """Check every row; yields a report line per problem (None for rows that are well, or with --repair)."""
        self.total = db.count()
        self._known = {name: set() for name in self.verifier.targets}
        for f in run_checks(self.verifier, read_rows(db, servers), jobs):
            if stopped():
                return
            self.counts[f.problem or "ok"] = self.counts.get(f.problem or "ok", 0) + 1
            if f.row.server in self._known and (rel := self.verifier.remote_path(f.row)) is not None:
                self._known[f.row.server].add(rel)
            if f.problem and self.repair:
                self._by_path.setdefault(f.row.path, []).append(f)
            yield f.report() if f.problem and not self.repair else None

    def extras(self, warn: Callable[[str], None]) -> Iterator[dict]:
        """Report lines for files in local destinations that no row names."""
        for name, dest in self.verifier.targets.items():
            if dest.scheme != "file":
                warn(f"--find-extra: {name} is not a local folder; only file:// destinations can be listed")
                continue
            for rel in extra_files(dest, self._known.get(name, set())):
                self.counts["extra"] = self.counts.get("extra", 0) + 1
                report = {"v": E.VERSION, "problem": "extra", "server": name}
                E.put_path(report, "remote", rel)
                yield report

    def repairs(self) -> Iterator[dict]:
        """One event per problem file that fixes it."""
        for findings in self._by_path.values():
            ev = repair_event(findings)
            if ev is None:
                self.unfixable += 1
                continue
            self.processed += ev["kind"] != "deleted" and processed_names(findings)
            yield ev

    @property
    def checked(self) -> int:
        return sum(v for k, v in self.counts.items() if k != "extra")

    @property
    def all_well(self) -> bool:
        return all(k == "ok" for k in self.counts)

    def progress(self) -> str:
        return f"{self.checked}/{self.total} checked, {self.checked - self.counts.get('ok', 0)} problem(s)"

    def summary(self) -> str:
        c = self.counts
        parts = [f"{c.get('ok', 0)} ok"] + [
            f"{c[k]} {k}" for k in ("missing", "different", "stale", "extra") if c.get(k)
        ]
        if c.get("error"):
            parts.append(f"{c['error']} could not be checked")
        return f"{self.checked} file record(s) checked: {', '.join(parts)}"
