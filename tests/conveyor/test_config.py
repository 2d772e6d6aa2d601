"""config.xml loading: the seed's sample as written, every error class with its line, all errors at once."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fileconveyor import errors
from fileconveyor.conveyor import config
from fileconveyor.conveyor.config import Conditions, Destination, load
from fileconveyor.stages.filter import stage as fc_filter

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLE = (FIXTURES / "sample.xml").read_text(encoding="utf-8")
# The sample's absolute paths, made relative to the config's directory (which also tests that rule).
REWRITES = {
    'scanPath="/htdocs/drupal"': 'scanPath="htdocs/drupal"',
    'documentRoot="/htdocs"': 'documentRoot="htdocs"',
    'scanPath="/Users/wimleers/Downloads"': 'scanPath="Downloads"',
    "<location>/htdocs/static.example.com</location>": "<location>htdocs/static.example.com</location>",
}


def write_sample(d: Path, text: str = SAMPLE) -> Path:
    for old, new in REWRITES.items():
        assert text.count(old) == 1, old  # the fixture is the seed's sample, verbatim
        text = text.replace(old, new)
    (d / "htdocs" / "drupal").mkdir(parents=True, exist_ok=True)
    (d / "Downloads").mkdir(exist_ok=True)
    path = d / "config.xml"
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)  # it holds a password: fc-conveyor refuses it when others can read it
    return path


def write(d: Path, body: str, name: str = "config.xml") -> Path:
    """A config.xml: ``body`` inside <config>, which starts on line 2 (so body line n is file line n + 2)."""
    (d / "src").mkdir(exist_ok=True)
    path = d / name
    path.write_text(f'<?xml version="1.0"?>\n<config>\n{body}\n</config>\n', encoding="utf-8")
    path.chmod(0o600)  # some hold a password
    return path


SOURCES = '<sources><source name="site" scanPath="src" /></sources>'
SERVERS = '<servers><server name="cdn" transporter="symlink_or_copy"><location>out</location><url>http://cdn/</url></server></servers>'
RULES = '<rules><rule for="site" label="all"><destinations><destination server="cdn" /></destinations></rule></rules>'


def minimal(rules: str = RULES, servers: str = SERVERS, sources: str = SOURCES, extra: str = "") -> str:
    return "\n".join([sources, servers, rules, extra])


def errors_of(path: Path) -> list[tuple[int, str]]:
    with pytest.raises(config.ConfigError) as info:
        load(path)
    return info.value.errors


def one_error(path: Path) -> tuple[int, str]:
    found = errors_of(path)
    assert len(found) == 1, found
    return found[0]


# -- the sample ------------------------------------------------------------------------------------


def test_sample_loads_as_written(tmp_path: Path, state_dir: Path) -> None:
    path = write_sample(tmp_path)
    c = load(path)
    site = tmp_path.resolve()
    assert c.ignored_dirs == ("CVS", ".svn")
    drupal, downloads = c.sources
    assert (drupal.name, drupal.scan_path, drupal.document_root, drupal.base_path, drupal.line) == (
        "drupal",
        site / "htdocs" / "drupal",
        site / "htdocs",
        "/drupal/",
        5,
    )
    assert (downloads.name, downloads.scan_path, downloads.document_root, downloads.base_path, downloads.line) == (
        "downloads",
        site / "Downloads",
        None,
        None,
        6,
    )
    assert list(c.servers) == ["origin pull cdn", "ftp push cdn"]
    origin, ftp = c.servers["origin pull cdn"], c.servers["ftp push cdn"]
    assert (origin.transporter, origin.max_connections, origin.line) == ("symlink_or_copy", 0, 11)
    assert origin.settings["location"] == str(site / "htdocs" / "static.example.com")
    assert origin.settings["url"] == "http://localhost/static.example.com/"
    # injected as the original injected symlinkWithin: files straight from a source are symlinked
    assert origin.settings["symlink_within"] == f"{site / 'htdocs' / 'drupal'}:{site / 'Downloads'}"
    assert (ftp.transporter, ftp.max_connections, ftp.line) == ("ftp", 5, 15)
    assert ftp.settings == {
        "host": "localhost",
        "username": "daemontest",
        "password": "daemontest",
        "url": "http://localhost/daemontest/",
    }

    css, videos, mirror = c.rules
    assert (css.source, css.label, css.line, css.deletion_delay) == ("drupal", "CSS, JS, images and Flash", 25, None)
    assert css.conditions == Conditions(
        paths=("misc", "profiles", "modules", "themes", "sites/all", "sites/default"),
        extensions=("ico", "js", "css", "gif", "png", "jpg", "jpeg", "svg", "swf"),
        ignored_dirs=(),
        pattern=None,
        min_size=None,
        max_size=None,
    )
    assert css.processors == (
        "image_optimizer.KeepFilename",
        "yui_compressor.YUICompressor",
        "google_closure_compiler.GoogleClosureCompiler",
        "link_updater.CSSURLUpdater",
        "unique_filename.Mtime",
    )
    assert css.destinations == (Destination("origin pull cdn", "static", 38), Destination("ftp push cdn", "static", 39))
    assert (videos.label, videos.line, videos.deletion_delay) == ("Videos", 45, 60)
    assert videos.conditions is not None
    assert (videos.conditions.paths, videos.conditions.extensions) == (
        ("modules", "misc"),
        ("flv", "mov", "avi", "wmv"),
    )
    assert (videos.conditions.min_size, videos.conditions.max_size) == (1_000_001, None)  # "minimum" is strict
    assert videos.processors == ("unique_filename.MD5",)
    assert videos.destinations == (Destination("ftp push cdn", "videos", 55),)
    assert (mirror.source, mirror.label, mirror.line, mirror.processors) == ("downloads", "Mirror 720P videos", 59, ())
    assert mirror.conditions is not None
    assert mirror.conditions.pattern == r".*/([a-zA-Z\-_ ])+720([a-zA-Z\-_ ])*\.[a-zA-Z]{3}$"
    assert mirror.conditions.extensions == ("mov", "avi", "mkv")
    assert [d.line for d in mirror.destinations] == [65, 66]

    s = c.settings
    assert s.pid_file == Path("~/.fileconveyor.pid").expanduser()
    assert s.log_file == site / "fileconveyor.log"
    assert s.synced_files_db == site / "synced_files.db"
    # under FC_STATE_DIR, as every stage's default; one per config file (a digest of its path)
    assert s.state_dir.parent == state_dir and s.state_dir.name.startswith("conveyor-config-")
    assert s.working_dir == s.state_dir / "work"
    assert (s.restart_interval, s.retry_interval) == (10.0, None)  # None: fc-process's 5 s, doubling
    assert (s.console_log_level, s.file_log_level) == (logging.WARNING, logging.INFO)
    assert s.max_processor_chains is None
    # the FTP server has no <path>: one warning (not one per destination), on its first destination's line
    assert len(c.warnings) == 1
    assert c.warnings[0].startswith(f"{path}:39: server 'ftp push cdn' has no <path>")
    # its password in a file others can read: refused (tests/security/test_permissions.py)
    path.chmod(0o644)
    assert one_error(path) == (15, f"{path} holds a password or key and other users can access it (mode 644); "
                                   f"run: chmod 600 {path}")  # fmt: skip


def test_sample_pattern_matches_as_the_original(tmp_path: Path) -> None:
    rule = load(write_sample(tmp_path)).rules[2]
    assert rule.conditions is not None
    cond = fc_filter.Conditions(extensions=rule.conditions.extensions, pattern=rule.conditions.pattern)
    assert cond.matches({"kind": "created", "path": "/dl/Some Show 720p.mkv"}) is True
    assert cond.matches({"kind": "created", "path": "/dl/Some Show 1080p.mkv"}) is False
    assert cond.matches({"kind": "created", "path": "/dl/Some Show 7201.mkv"}) is False  # a digit after 720
    assert cond.matches({"kind": "created", "path": "/dl/Some_Show-720.txt"}) is False


def test_logical_base_path_is_a_warning(tmp_path: Path) -> None:
    text = SAMPLE.replace('basePath="/drupal/"', 'basePath="/logical/"')
    c = load(write_sample(tmp_path, text))
    assert any(":5: documentRoot + basePath" in w and "logical base path" in w for w in c.warnings)


def test_relative_paths_follow_base_dir(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "src").mkdir(parents=True)
    (tmp_path / "conf").mkdir()
    path = write(tmp_path / "conf", minimal())
    c = load(path, base_dir=elsewhere)
    assert c.sources[0].scan_path == elsewhere.resolve() / "src"
    assert c.servers["cdn"].settings["location"] == str(elsewhere.resolve() / "out")


def test_config_error_is_a_configuration_error(tmp_path: Path) -> None:
    exc = config.ConfigError(tmp_path / "c.xml", [(7, "b"), (3, "a")])
    assert isinstance(exc, errors.ConfigError) and exc.exit == errors.Exit.CONFIG
    assert exc.errors == [(3, "a"), (7, "b")]
    assert str(exc) == f"{tmp_path / 'c.xml'}:3: a\n{tmp_path / 'c.xml'}:7: b"


# -- size: the original's strict bounds as inclusive ones ----------------------------------------------


@pytest.mark.parametrize(
    ("kind", "threshold", "field", "bound"),
    [("minimum", 100, "min_size", 101), ("maximum", 100, "max_size", 99), ("minimum", 0, "min_size", 1)],
)
def test_size_bounds_become_inclusive(tmp_path: Path, kind: str, threshold: int, field: str, bound: int) -> None:
    rules = RULES.replace(
        "<destinations>", f'<filter><size conditionType="{kind}">{threshold}</size></filter><destinations>'
    )
    cond = load(write(tmp_path, minimal(rules))).rules[0].conditions
    assert cond is not None and getattr(cond, field) == bound
    # fc-filter with these bounds matches exactly what the original matched: a file at the threshold never
    stage = fc_filter.Conditions(min_size=cond.min_size, max_size=cond.max_size)
    for size in (threshold - 1, threshold, threshold + 1):
        if size < 0:
            continue
        original = size > threshold if kind == "minimum" else size < threshold
        assert stage.matches({"kind": "created", "path": "/s/f", "size": size}) is original, size


def test_minimum_and_maximum_together(tmp_path: Path) -> None:
    sizes = '<size conditionType="minimum">10</size><size conditionType="maximum">20</size>'
    rules = RULES.replace("<destinations>", f"<filter>{sizes}</filter><destinations>")
    cond = load(write(tmp_path, minimal(rules))).rules[0].conditions
    assert cond is not None and (cond.min_size, cond.max_size) == (11, 19)


# -- one test per error class, each with its line --------------------------------------------------


def test_malformed_xml_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "config.xml"
    path.write_text('<?xml version="1.0"?>\n<config>\n  <sources>\n    <source name="a" scanPath=x />\n', "utf-8")
    line, msg = one_error(path)
    assert line == 4 and msg.startswith("malformed XML: not well-formed (invalid token) (column ")


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        # README's first draft of its newcomer config: an option in a comment
        ("  <!-- served by python3 -m http.server --directory cdn -->", '"--" may not appear inside a comment'),
        ("  <!-- a comment\n       that says --no-wait on its second line -->", '"--" may not appear inside a comment'),
        ('  <sources><source name="a" scanPath="a&b" /></sources>', "an & in a value is written &amp;"),
        ('  <servers><server name="s" transporter="x"><to>s3://b/?a=1&b=2</to></server></servers>', "&amp;"),
    ],
)
def test_malformed_xml_says_what_to_write_instead(tmp_path: Path, text: str, hint: str) -> None:
    path = tmp_path / "config.xml"
    path.write_text(f'<?xml version="1.0"?>\n<config>\n{text}\n</config>\n', "utf-8")
    line, msg = one_error(path)
    assert line == 3 + text.count("\n") and msg.startswith("malformed XML: not well-formed (invalid token)")
    assert hint in msg, msg


def test_malformed_xml_without_a_known_cause_has_no_hint(tmp_path: Path) -> None:
    path = tmp_path / "config.xml"
    path.write_text('<?xml version="1.0"?>\n<config>\n  <a>x &amp; y -- z</a>\n  <b x=1 />\n</config>\n', "utf-8")
    line, msg = one_error(path)
    assert line == 4 and msg.endswith(")") and "&amp;" not in msg and "comment" not in msg, msg


def test_unreadable_file(tmp_path: Path) -> None:
    line, msg = one_error(tmp_path / "missing.xml")
    assert line == 0 and "cannot read it" in msg


def test_missing_sections_all_reported(tmp_path: Path) -> None:
    found = errors_of(write(tmp_path, ""))
    assert found == [(2, "<config> has no <sources>"), (2, "<config> has no <servers>"), (2, "<config> has no <rules>")]


def test_wrong_root_and_unknown_section(tmp_path: Path) -> None:
    path = tmp_path / "c.xml"
    path.write_text("<conf>\n<sources/>\n<servers/>\n<rules/>\n<extra/>\n</conf>\n", "utf-8")
    found = errors_of(path)
    assert (1, "the root element must be <config>, not <conf>") in found
    assert any(line == 5 and "unexpected <extra>" in msg for line, msg in found)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('<source name="my site" scanPath="src" />', "may hold only letters, digits, - and _"),
        ('<source name="" scanPath="src" />', "needs the attribute name"),
        ('<source name="s" />', "needs the attribute scanPath"),
        ('<source name="s" scanPath="nowhere" />', "scanPath 'nowhere': does not exist"),
        ('<source name="s" scanPath="config.xml" />', "scanPath 'config.xml': not a directory"),
        ('<source name="s" scanPath="src" documentRoot="nowhere" />', "documentRoot 'nowhere': does not exist"),
        ('<source name="s" scanPath="src" documentRoot="src" basePath="drupal/" />', "must start and end with /"),
        ('<source name="s" scanPath="src" basePath="/drupal" />', "must start and end with /"),
        ('<source name="s" scanPath="src" scanpath="x" />', "has no attribute 'scanpath'"),
    ],
)
def test_source_errors(tmp_path: Path, source: str, expected: str) -> None:
    body = minimal(sources=f"<sources>\n{source}\n</sources>", rules="<rules/>")
    line, msg = one_error(write(tmp_path, body))
    assert line == 4 and expected in msg, msg


def test_a_missing_relative_folder_is_named_where_it_was_looked_for(tmp_path: Path) -> None:
    # the README's config.xml started from another folder: "site" is the config file's neighbour, not the shell's
    body = minimal(sources='<sources>\n<source name="s" scanPath="site" documentRoot="/no/such/root" />\n</sources>')
    found = errors_of(write(tmp_path, body, "fc.xml"))
    assert (
        4,
        f"scanPath 'site': does not exist (that is {tmp_path / 'site'}: a relative path starts at the config "
        "file's folder)",
    ) in found
    assert (4, "documentRoot '/no/such/root': does not exist") in found  # absolute: said as it was written


@pytest.mark.parametrize(
    ("filter_", "chain", "warned"),
    [
        ("", "minify.CSS,unique_filename.MD5", True),  # a newcomer's first chain: every file renamed, CSS not updated
        ("<filter><extensions>CSS:png</extensions></filter>", "unique_filename.Mtime", True),
        ("<filter><extensions>png:gif</extensions></filter>", "unique_filename.MD5", False),  # no stylesheet
        ("", "link_updater.CSSURLUpdater,unique_filename.MD5", False),  # the sample's and make demo's
        ("", "minify.CSS", False),  # nothing renamed
    ],
)
def test_unique_names_without_the_css_updater_is_a_warning(
    tmp_path: Path, filter_: str, chain: str, warned: bool
) -> None:
    procs = "".join(f'<processor name="{p}" />' for p in chain.split(","))
    rules = RULES.replace('label="all">', f'label="all">{filter_}<processorChain>{procs}</processorChain>')
    c = load(write(tmp_path, minimal(rules)))
    ours = [w for w in c.warnings if "link_updater.CSSURLUpdater points the stylesheets" in w]
    assert len(ours) == warned, c.warnings
    if warned:
        assert ours[0].startswith(f"{tmp_path / 'config.xml'}:5: rule 'all': unique_filename.")


def test_sources_ignored_dirs_checked(tmp_path: Path) -> None:
    line, msg = one_error(write(tmp_path, minimal(sources=SOURCES.replace("<sources>", '<sources ignoredDirs="a/b">'))))
    assert line == 3 and "contains '/'" in msg


def test_duplicate_source(tmp_path: Path) -> None:
    sources = '<sources>\n<source name="site" scanPath="src" />\n<source name="site" scanPath="src" />\n</sources>'
    assert one_error(write(tmp_path, minimal(sources=sources))) == (
        5,
        "a second source named 'site' (the first is on line 4)",
    )


def test_source_without_rule_is_a_warning(tmp_path: Path) -> None:
    c = load(write(tmp_path, minimal(rules="<rules/>")))
    assert c.warnings == (f"{tmp_path / 'config.xml'}:3: no rule is for source 'site': it is not watched",)


def test_duplicate_server(tmp_path: Path) -> None:
    one = SERVERS.removeprefix("<servers>").removesuffix("</servers>")
    servers = f"<servers>\n{one}\n{one}\n</servers>"
    assert one_error(write(tmp_path, minimal(servers=servers))) == (
        6,
        "a second server named 'cdn' (the first is on line 5)",
    )


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ('<server name="x" transporter="gopher"><url>u</url></server>', "unknown transporter 'gopher'"),
        (
            '<server name="x" transporter="symlink_or_copy" maxConnections="-1"><location>o</location><url>u</url>'
            "</server>",
            "maxConnections must be a whole number of 0 or more, not '-1'",
        ),
        (
            '<server name="x" transporter="symlink_or_copy" maxConnections="many"><location>o</location><url>u</url>'
            "</server>",
            "not 'many'",
        ),
        ('<server name="x" transporter="ftp"><host>h</host><url>u</url></server>', "ftp needs <username>, <password>"),
        (
            '<server name="x" transporter="symlink_or_copy"><location>o</location><url>u</url><colour>red</colour>'
            "</server>",
            "unknown setting <colour>",
        ),
        (
            '<server name="x" transporter="symlink_or_copy"><location>o</location><url>u</url><url>v</url></server>',
            "<url> given twice",
        ),
        (
            '<server name="x" transporter="symlink_or_copy" maxConnections="65"><location>o</location><url>u</url>'
            "</server>",
            "connections must be between 1 and 64",
        ),  # fmt: skip  (fc-transport's own check)
        ('<server transporter="ftp" />', "needs the attribute name"),
    ],
)
def test_server_errors(tmp_path: Path, server: str, expected: str) -> None:
    body = minimal(servers=f"<servers>\n{server}\n</servers>", rules="<rules/>")
    found = errors_of(write(tmp_path, body))
    assert any(line == 5 and expected in msg for line, msg in found), found


def test_transporter_typo_is_one_error_with_did_you_mean(tmp_path: Path) -> None:
    """transporter="fpt": one error suggesting ftp, not three (its ftp settings are not 'unknown settings')."""
    server = (
        '<server name="x" transporter="fpt"><host>h</host><username>u</username><password>p</password>'
        "<url>u</url></server>"
    )
    body = minimal(servers=f"<servers>\n{server}\n</servers>", rules="<rules/>")
    line, msg = one_error(write(tmp_path, body))
    assert line == 5 and "unknown transporter 'fpt'; did you mean ftp?" in msg, msg


@pytest.mark.parametrize(
    ("rule", "expected", "line"),
    [
        (
            '<rule for="nowhere" label="x">\n<destinations><destination server="cdn"/></destinations></rule>',
            "is for source 'nowhere', which does not exist (sources: site)",
            6,
        ),
        (
            '<rule for="site">\n<destinations><destination server="cdn"/></destinations></rule>',
            "<rule> needs the attribute label",
            6,
        ),
        (
            '<rule for="site" label="x" fileDeletionDelayAfterSync="-5">\n<destinations><destination server="cdn"/>'
            "</destinations></rule>",
            "fileDeletionDelayAfterSync must be a whole number of 0 or more",
            6,
        ),
        ('<rule for="site" label="x">\n</rule>', "a rule needs <destinations>", 6),
        ('<rule for="site" label="x">\n<destinations>\n</destinations></rule>', "needs at least one <destination", 7),
        (
            '<rule for="site" label="x">\n<destinations>\n<destination server="nope"/></destinations></rule>',
            "destination server 'nope' does not exist (servers: 'cdn')",
            8,
        ),
        (
            '<rule for="site" label="x">\n<destinations>\n<destination server="cdn"/>\n<destination server="cdn"/>'
            "</destinations></rule>",
            "server 'cdn' is listed twice in one rule (first on line 8)",
            9,
        ),
        (
            '<rule for="site" label="x">\n<destinations>\n<destination server="cdn" path="a/../b"/></destinations>'
            "</rule>",
            "give a plain directory path",
            8,
        ),
        (
            '<rule for="site" label="x">\n<filter/>\n<destinations><destination server="cdn"/></destinations></rule>',
            "an empty <filter/>",
            7,
        ),
        (
            '<rule for="site" label="x">\n<filter>\n<colour>red</colour></filter><destinations><destination '
            'server="cdn"/></destinations></rule>',
            "unexpected <colour> in <filter>",
            8,
        ),
        (
            '<rule for="site" label="x">\n<filter>\n<extensions>.jpg:png</extensions></filter><destinations>'
            '<destination server="cdn"/></destinations></rule>',
            "write extensions without the dot",
            8,
        ),
        (
            '<rule for="site" label="x">\n<filter>\n<paths>a::b</paths></filter><destinations>'
            '<destination server="cdn"/></destinations></rule>',
            "empty item",
            8,
        ),
        (
            '<rule for="site" label="x">\n<filter>\n<ignoredDirs>a/b</ignoredDirs></filter><destinations>'
            '<destination server="cdn"/></destinations></rule>',
            "contains '/'",
            8,
        ),
        (
            '<rule for="site" label="x">\n<filter>\n<pattern>([a-z</pattern></filter><destinations>'
            '<destination server="cdn"/></destinations></rule>',
            "not a valid regular expression",
            8,
        ),
        (
            '<rule for="site" label="x">\n<filter>\n<pattern></pattern></filter><destinations>'
            '<destination server="cdn"/></destinations></rule>',
            "<pattern> is empty",
            8,
        ),
        (
            '<rule for="site" label="x">\n<filter>\n<size>10</size></filter><destinations>'
            '<destination server="cdn"/></destinations></rule>',
            "<size> needs the attribute conditionType",
            8,
        ),
        (
            '<rule for="site" label="x">\n<filter>\n<size conditionType="exactly">10</size></filter><destinations>'
            '<destination server="cdn"/></destinations></rule>',
            "must be minimum or maximum",
            8,
        ),
        (
            '<rule for="site" label="x">\n<filter>\n<size conditionType="minimum">1k</size></filter><destinations>'
            '<destination server="cdn"/></destinations></rule>',
            "whole number of bytes, not '1k'",
            8,
        ),
        (
            '<rule for="site" label="x">\n<filter>\n<size conditionType="maximum">0</size></filter><destinations>'
            '<destination server="cdn"/></destinations></rule>',
            "matches no file",
            8,
        ),
        (
            '<rule for="site" label="x">\n<filter><size conditionType="minimum">20</size>\n<size conditionType='
            '"maximum">20</size></filter><destinations><destination server="cdn"/></destinations></rule>',
            "nothing would pass",
            7,
        ),
        (
            '<rule for="site" label="x">\n<processorChain>\n<processor name="no_such.Processor"/></processorChain>'
            '<destinations><destination server="cdn"/></destinations></rule>',
            "no_such.Processor",
            8,
        ),
        (
            '<rule for="site" label="x">\n<processorChain>\n<processor name="cmd:fc-no-such-tool {in} {out}"/>'
            '</processorChain><destinations><destination server="cdn"/></destinations></rule>',
            "needs fc-no-such-tool (not found on PATH)",
            8,
        ),
    ],
)
def test_rule_errors(tmp_path: Path, rule: str, expected: str, line: int) -> None:
    body = minimal(rules=f"<rules>\n{rule}\n</rules>")
    found = errors_of(write(tmp_path, body))
    assert any(n == line and expected in msg for n, msg in found), found


def test_unknown_processor_message_names_the_available_ones(tmp_path: Path) -> None:
    rules = RULES.replace(
        "<destinations>", '<processorChain><processor name="unique_filename.SHA1"/></processorChain><destinations>'
    )
    _, msg = one_error(write(tmp_path, minimal(rules)))
    assert "unique_filename.SHA1" in msg and "unique_filename.MD5" in msg


def test_processors_resolve_as_fc_process_does(tmp_path: Path) -> None:
    chain = '<processor name="md5"/><processor name="filename.SpacesToDashes"/>'
    rules = RULES.replace("<destinations>", f"<processorChain>{chain}</processorChain><destinations>")
    assert load(write(tmp_path, minimal(rules))).rules[0].processors == ("md5", "filename.SpacesToDashes")


def test_shared_environment_conflicts(tmp_path: Path) -> None:
    ftp = '<server name="{}" transporter="ftp"><host>h</host><username>u</username><password>{}</password><url>u</url><path>/</path></server>'  # noqa: E501
    servers = "<servers>\n" + ftp.format("a b", "one") + "\n" + ftp.format("a_b", "two") + "\n</servers>"
    rule = '<rules>\n<rule for="site" label="both"><destinations><destination server="a b"/><destination server="a_b"/></destinations></rule>\n</rules>'  # noqa: E501
    line, msg = one_error(write(tmp_path, minimal(rule, servers)))
    assert line == 9 and "FC_A_B_PASSWORD" in msg and "rename one" in msg


def two_rules(tmp_path: Path, filter_a: str, filter_b: str, dest_b: str) -> tuple[str, ...]:
    other = '<server name="other" transporter="symlink_or_copy"><location>o</location><url>http://o/</url></server>'
    servers = SERVERS.replace("</servers>", other + "</servers>")
    rules = (
        "<rules>\n"
        f'<rule for="site" label="css">{filter_a}<destinations><destination server="cdn"/></destinations></rule>\n'
        f'<rule for="site" label="all">{filter_b}<destinations>{dest_b}</destinations></rule>\n'
        "</rules>"
    )
    return load(write(tmp_path, minimal(rules, servers))).warnings


@pytest.mark.parametrize(
    ("filter_a", "filter_b", "dest_b", "expected"),
    [
        # every file of the source: the stylesheet goes to the same place twice
        ("<filter><extensions>css</extensions></filter>", "", '<destination server="cdn"/>', "to the same place"),
        ("", "", '<destination server="cdn" path="raw"/>', "at different paths"),
        # "gz" and "tar.gz" both match a.tar.gz; extensions without case
        ("<filter><extensions>tar.gz</extensions></filter>", "<filter><extensions>GZ</extensions></filter>",
         '<destination server="cdn"/>', "to the same place"),
        ("<filter><paths>img</paths></filter>", "<filter><paths>img/icons:js</paths></filter>",
         '<destination server="cdn"/>', "to the same place"),
        # no file passes both, or they do not share a server: no warning
        ("<filter><extensions>css</extensions></filter>", "<filter><extensions>js:png</extensions></filter>",
         '<destination server="cdn"/>', None),
        ("<filter><paths>img</paths></filter>", "<filter><paths>images:js</paths></filter>",
         '<destination server="cdn"/>', None),
        ('<filter><size conditionType="maximum">1000</size></filter>',
         '<filter><size conditionType="minimum">999</size></filter>', '<destination server="cdn"/>', None),
        ("", "", '<destination server="other"/>', None),
    ],
)  # fmt: skip
def test_two_rules_sending_one_file_to_one_server_is_a_warning(
    tmp_path: Path, filter_a: str, filter_b: str, dest_b: str, expected: str | None
) -> None:
    """synced_files keeps one row per file and server: of two rules that both send a file to one server, the
    record keeps the last one's URL (and, at one path, the server the last one's copy)."""
    warnings = two_rules(tmp_path, filter_a, filter_b, dest_b)
    if expected is None:
        assert warnings == ()
    else:
        assert len(warnings) == 1, warnings
        assert warnings[0].startswith(f"{tmp_path / 'config.xml'}:7: rules 'css' (line 6) and 'all' both send")
        assert "server 'cdn'" in warnings[0] and expected in warnings[0]


# -- settings -----------------------------------------------------------------------------------------


def test_settings_given(tmp_path: Path) -> None:
    settings = """<settings>
  <PID_FILE>~/run/fc.pid</PID_FILE>
  <LOG_FILE>logs/fc.log</LOG_FILE>
  <PERSISTENT_DATA_DB>state</PERSISTENT_DATA_DB>
  <SYNCED_FILES_DB>/srv/fc/synced.db</SYNCED_FILES_DB>
  <RESTART_INTERVAL>2.5</RESTART_INTERVAL>
  <RETRY_INTERVAL>60</RETRY_INTERVAL>
  <CONSOLE_LOGGER_LEVEL>logging.DEBUG</CONSOLE_LOGGER_LEVEL>
  <FILE_LOGGER_LEVEL>error</FILE_LOGGER_LEVEL>
  <MAX_SIMULTANEOUS_PROCESSORCHAINS>3</MAX_SIMULTANEOUS_PROCESSORCHAINS>
  <MAX_SIMULTANEOUS_TRANSPORTERS>10</MAX_SIMULTANEOUS_TRANSPORTERS>
</settings>"""
    c = load(write(tmp_path, minimal(extra=settings)))
    s, base = c.settings, tmp_path.resolve()
    assert s.pid_file == Path("~/run/fc.pid").expanduser()
    assert s.log_file == base / "logs" / "fc.log"
    assert s.state_dir == base / "state" and s.working_dir == base / "state" / "work"
    assert s.synced_files_db == Path("/srv/fc/synced.db")
    assert (s.restart_interval, s.retry_interval) == (2.5, 60.0)
    assert (s.console_log_level, s.file_log_level, s.max_processor_chains) == (logging.DEBUG, logging.ERROR, 3)
    assert len(c.warnings) == 1
    assert ":16: <MAX_SIMULTANEOUS_TRANSPORTERS> no longer applies" in c.warnings[0]
    assert "maxConnections" in c.warnings[0]


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("<DEBUG_MODE>1</DEBUG_MODE>", "unknown setting <DEBUG_MODE>"),
        ("<RETRY_INTERVAL>soon</RETRY_INTERVAL>", "must be a number of seconds"),
        ("<RESTART_INTERVAL>-1</RESTART_INTERVAL>", "must be a number of seconds"),
        ("<CONSOLE_LOGGER_LEVEL>LOUD</CONSOLE_LOGGER_LEVEL>", "must be DEBUG, INFO"),
        ("<MAX_SIMULTANEOUS_PROCESSORCHAINS>0</MAX_SIMULTANEOUS_PROCESSORCHAINS>", "1 or more"),
        ("<LOG_FILE></LOG_FILE>", "<LOG_FILE> is empty"),
        ("<LOG_FILE>a</LOG_FILE><LOG_FILE>b</LOG_FILE>", "<LOG_FILE> given twice"),
        ("<PERSISTENT_DATA_DB>./persistent_data.db</PERSISTENT_DATA_DB>", "is a file: it names a directory"),
    ],
)
def test_settings_errors(tmp_path: Path, setting: str, expected: str) -> None:
    (tmp_path / "persistent_data.db").write_bytes(b"SQLite format 3\0")
    line, msg = one_error(write(tmp_path, minimal(extra=f"<settings>\n{setting}\n</settings>")))
    assert line == 7 and expected in msg, msg


# -- all at once ----------------------------------------------------------------------------------------


def test_all_errors_reported_at_once(tmp_path: Path) -> None:
    body = """<sources ignoredDirs="CVS">
  <source name="bad name" scanPath="src" />
  <source name="site" scanPath="missing" />
</sources>
<servers>
  <server name="cdn" transporter="warp"><url>u</url></server>
  <server name="ftp" transporter="ftp" maxConnections="x"><host>h</host></server>
</servers>
<rules>
  <rule for="site" label="a" fileDeletionDelayAfterSync="soon">
    <filter/>
    <processorChain><processor name="nope.Nope"/></processorChain>
    <destinations><destination server="missing"/></destinations>
  </rule>
  <rule for="ghost" label="b"/>
</rules>
<settings><NOPE>1</NOPE></settings>"""
    path = write(tmp_path, body)
    with pytest.raises(config.ConfigError) as info:
        load(path)
    lines = [line for line, _ in info.value.errors]
    assert lines == sorted(lines)
    assert set(lines) == {4, 5, 8, 9, 12, 13, 14, 15, 17, 19}, info.value.errors
    text = str(info.value).splitlines()
    assert len(text) == len(info.value.errors) >= 12
    assert all(t.startswith(f"{path}:") for t in text)
