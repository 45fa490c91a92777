"""The code's shape: one job per file, and README's Layout section a true map of it."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("davidnet", "pipelines", "experiments")
# A module much longer than this holds more than one job (issue 13's bar: "about 500").
MAX_LINES = 520

pytestmark = pytest.mark.one_backend("tensorflow")


def modules(package):
    return sorted(p for p in (ROOT / package).rglob("*.py") if p.name != "__init__.py")


def layout_section():
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Layout\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def test_no_module_of_the_packages_is_over_the_bar():
    lengths = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for package in PACKAGES for p in modules(package)}
    assert len(lengths) > 40  # the walk found the packages
    assert {name: n for name, n in lengths.items() if n > MAX_LINES} == {}


def test_the_readme_layout_names_every_library_module():
    named = set(re.findall(r"`(\w+\.py)`", layout_section()))
    missing = [str(p.relative_to(ROOT)) for package in ("davidnet", "pipelines") for p in modules(package) if p.name not in named]
    assert missing == []
