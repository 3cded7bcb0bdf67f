"""The documentation stays true to the code: the generated configuration reference is current, the README stays a
short front door, and the links between the documents lead somewhere."""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 160
MAX_LINE_CHARACTERS = 200


def config_reference():
    """scripts/config_reference.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("config_reference", ROOT / "scripts" / "config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_reference_is_current():
    generated = config_reference().render()
    written = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert written == generated, "docs/configuration.md is stale: run python scripts/config_reference.py"


def test_configuration_reference_documents_every_setting():
    from dataclasses import fields

    from iic.clustering.config import ClusterConfig
    from iic.config import field_comments
    from iic.segmentation.config import SegmentConfig

    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    module = config_reference()
    for cls in (ClusterConfig, SegmentConfig):
        comments = field_comments(cls)
        for field in fields(cls):
            assert f"| `{field.name}` | `--{field.name.replace('_', '-')}" in text, field.name
            assert comments.get(field.name) or field.name in module.MISSING_COMMENTS, \
                f"{cls.__name__}.{field.name} has no trailing comment to document it"


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines: move detail into docs/"
    long = [number for number, line in enumerate(lines, 1) if len(line) > MAX_LINE_CHARACTERS]
    assert not long, f"README.md lines over {MAX_LINE_CHARACTERS} characters: {long}"


def test_readme_keeps_the_two_commands():
    """CI runs the second; the demo is the first thing a reader tries."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "\nbash scripts/demo.sh " in text
    assert "\nbash scripts/test.sh " in text


def anchors(document: Path) -> set[str]:
    """The anchors GitHub makes for a Markdown file's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", document.read_text(encoding="utf-8"), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def test_relative_links_resolve():
    documents = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").rglob("*.md"))]
    broken = []
    for document in documents:
        text = re.sub(r"```.*?```", "", document.read_text(encoding="utf-8"), flags=re.S)  # not code blocks
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path_part, _, anchor = target.partition("#")
            path = (document.parent / path_part).resolve() if path_part else document
            if not path.exists() or (anchor and path.suffix == ".md" and anchor not in anchors(path)):
                broken.append(f"{document.relative_to(ROOT)} → {target}")
    assert not broken, "broken links: " + ", ".join(broken)
