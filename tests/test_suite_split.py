"""`python -m tests` runs a test marked one_backend(name) in name's run only, and every other test in both."""

import types

import keras
import pytest

from tests import conftest


class Item:
    def __init__(self, name, backend=None):
        self.name = name
        self.mark = pytest.mark.one_backend(backend).mark if backend else None

    def get_closest_marker(self, name):
        return self.mark if name == "one_backend" else None


def split(monkeypatch, env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    items = [Item("both"), Item("here", keras.backend.backend()), Item("there", "the-other-backend")]
    deselected = []
    config = types.SimpleNamespace(hook=types.SimpleNamespace(pytest_deselected=lambda items: deselected.extend(items)))
    conftest._one_backend_only(config, items)
    return [i.name for i in items], [i.name for i in deselected]


def test_the_split_runs_each_marked_test_under_its_backend_only(monkeypatch):
    assert split(monkeypatch, {"DAVIDNET_TEST_SPLIT": "1"}) == (["both", "here"], ["there"])


def test_plain_pytest_runs_every_test(monkeypatch):
    monkeypatch.delenv("DAVIDNET_TEST_SPLIT", raising=False)
    assert split(monkeypatch, {}) == (["both", "here", "there"], [])
