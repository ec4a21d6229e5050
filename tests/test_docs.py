"""The documentation: a short README, a complete alert table, links that resolve."""

from __future__ import annotations

import re

import yaml
from test_deploy_contract import ROOT, heading_anchors

README = ROOT / "README.md"
DOCS = ROOT / "docs"
ALERTS_DOC = DOCS / "alerts.md"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
PAGES = [README, ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md", *sorted(DOCS.glob("*.md"))]

_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def links(markdown: str) -> list[str]:
    """The targets of the Markdown links of a page, code blocks and code spans left out."""
    return _LINK.findall(_CODE.sub("", _FENCE.sub("", markdown)))


def alert_rules() -> dict[str, dict[str, object]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def alert_table() -> dict[str, list[str]]:
    """docs/alerts.md's table: alert name -> its cells."""
    rows = {}
    for line in ALERTS_DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| DurableObjects"):
            rows[cells[0]] = cells
    return rows


def test_readme_fits_in_400_lines() -> None:
    """The README is read in a few minutes; reference material lives in docs/."""
    lines = README.read_text().count("\n")
    assert lines <= 400, f"README.md has {lines} lines: move reference material to docs/"


def test_readme_test_command_is_the_one_ci_runs() -> None:
    """The README's test command is, verbatim, the one .ci/run runs."""
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci.startswith("python3 -m venv .venv && ")
    assert f"```sh\n{ci}\n```" in README.read_text()


def test_alert_table_lists_every_rule_with_its_for_and_severity() -> None:
    """docs/alerts.md's table has one row per rule of alerts.yml, no more, defaults right."""
    rules = alert_rules()
    table = alert_table()
    assert set(table) == set(rules), "the table and alerts.yml differ"
    for name, rule in rules.items():
        _, severity, _, duration = table[name]
        assert severity == rule["labels"]["severity"], name  # type: ignore[index]
        assert duration == rule.get("for", "0m"), name


def test_every_alert_has_a_runbook_section() -> None:
    """Each rule's runbook_url anchor is a heading of docs/alerts.md."""
    anchors = heading_anchors(ALERTS_DOC.read_text())
    for name, rule in alert_rules().items():
        url = rule["annotations"]["runbook_url"]  # type: ignore[index]
        page, _, anchor = url.partition("#")
        assert page.endswith("/blob/main/docs/alerts.md"), name
        assert anchor in anchors, name


def test_relative_links_resolve() -> None:
    """Every relative link of README, CONTRIBUTING, CHANGELOG and docs/ names a file that
    exists and, for a Markdown page, a heading it has."""
    broken = []
    for page in PAGES:
        for target in links(page.read_text()):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            path_part, _, anchor = target.partition("#")
            path = (page.parent / path_part).resolve() if path_part else page
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
                continue
            if anchor and path.suffix == ".md" and anchor not in heading_anchors(path.read_text()):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []


def test_link_reader_skips_code() -> None:
    """Links in code blocks and code spans are not links."""
    text = "[a](x.md) `[b](y.md)`\n```\n[c](z.md)\n```\n[d](w.md#h)\n"
    assert links(text) == ["x.md", "w.md#h"]


def test_license_is_the_apache_license_pyproject_names() -> None:
    """LICENSE holds the Apache License 2.0 text, as pyproject.toml declares."""
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert 'license = { text = "Apache-2.0" }' in (ROOT / "pyproject.toml").read_text()


def test_changelog_keeps_an_unreleased_section() -> None:
    """CHANGELOG.md follows Keep a Changelog: an Unreleased section on top."""
    versions = re.findall(r"^## \[([^\]]+)\]", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert versions[0] == "Unreleased"
