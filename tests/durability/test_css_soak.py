"""Issue 17, findings 3 and 4: with unique names and link_updater, a changed image or @imported stylesheet
left the stylesheets that reference it pointing at its deleted old name.  A short run of the CSS soak (the real
pipeline, the destination sampled while it converges, one run killed with -9); `make css-soak` runs it longer."""

from __future__ import annotations

from pathlib import Path

from .css_soak import soak


def test_no_published_stylesheet_references_a_missing_file(tmp_path: Path) -> None:
    report = soak(tmp_path, css_files=40, rounds=1, burst=12, kill_rate=1.0, seed=3)
    print(report.summary())
    assert report.samples > 10 and report.checked > 1000, report.summary()
    assert report.broken == [], f"{report.summary()}\n{report.broken[:10]}"
    assert report.unresolved_at_end == [], f"{report.summary()}\n{report.unresolved_at_end[:10]}"
