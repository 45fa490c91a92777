"""Each setting defined once (davidnet.config): the flags, their help, their
checks and the README's table all come from the definitions; the models and
schedules are registries."""

import dataclasses
import math

import pytest

from davidnet import config
from davidnet.config import MODELS, SCHEDULES, Config
from experiments.davidnet import build_parser, flag_table
from tests.helpers import ROOT

pytestmark = pytest.mark.one_backend("tensorflow")  # the same on either backend (tests/conftest.py)


def test_the_readme_flag_table_is_the_one_the_definitions_give():
    readme = (ROOT / "README.md").read_text()
    assert flag_table() in readme, "README.md's flag table is stale: paste experiments.davidnet.flag_table()"


def test_every_setting_has_one_flag_with_its_help_default_and_choices():
    parser = build_parser()
    actions = {action.dest: action for action in parser._actions}
    for field in dataclasses.fields(Config):
        action = actions[field.name]
        assert action.option_strings[0] == "--" + field.name.replace("_", "-")
        shown = action.help.replace("%%", "%")
        assert shown.startswith(field.metadata["help"])
        assert shown.endswith(f"(default: {config.default_text(field.name)})")
        assert action.choices == field.metadata["choices"]


@pytest.mark.parametrize(
    "name, bad, message",
    [
        ("epochs", 0, "epochs must be > 0"),
        ("lr", -0.1, "lr must be >= 1e-9"),
        ("momentum", 1.0, "momentum must be >= 0 and < 1"),
        ("target", 94, "target must be > 0 and <= 1"),
        ("lr", math.nan, "lr must be a finite number"),
        ("weight_decay", math.inf, "weight_decay must be a finite number"),
        ("schedule", "cosine", "schedule must be one of piecewise, step"),
    ],
)
def test_a_bad_value_is_refused_by_the_config_and_the_flag_alike(name, bad, message):
    with pytest.raises(ValueError, match=message):
        Config(**{name: bad})
    flag = "--" + name.replace("_", "-")
    with pytest.raises(SystemExit):  # argparse: one line and exit 2
        build_parser().parse_args([flag, str(bad)])


def test_settings_that_depend_on_each_other_are_checked_before_any_data():
    with pytest.raises(ValueError, match="warmup epochs must be between 0 and the 10 epochs"):
        Config(epochs=10, warmup_epochs=12)
    with pytest.raises(ValueError, match="milestones must increase and lie between 0 and the 10 epochs"):
        Config(epochs=10, schedule="step", milestones="5,12")
    with pytest.raises(ValueError, match="scale"):
        Config(schedule="triangular", scale_fn="__import__('os')")


def test_flag_errors_are_one_line_naming_the_bound(capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["--momentum", "1.5"])
    assert e.value.code == 2
    assert "argument --momentum: must be >= 0 and < 1" in capsys.readouterr().err


def test_models_and_schedules_are_registries_whose_names_are_the_choices():
    assert set(MODELS) <= set(config.FIELDS["model"].metadata["choices"])
    assert config.FIELDS["schedule"].metadata["choices"] == tuple(SCHEDULES)
    for registry in (MODELS, SCHEDULES):
        for name in registry:
            assert callable(config.builder(registry, name))


def test_fastnet_is_still_accepted_for_the_airbench94_network():
    assert Config(model="fastnet").model == "airbench94"
    args = build_parser().parse_args(["--model", "fastnet"])
    assert Config(model=args.model).model == "airbench94"
    with pytest.raises(ValueError, match="settings of the airbench94"):
        Config(model="davidnet", whiten=True)


@pytest.mark.parametrize("module", ["experiments.davidnet", "experiments.resnet44", "experiments.predict", "experiments.dawnbench"])
def test_a_bad_flag_is_one_line_naming_it_not_the_whole_usage(module, capsys):
    import importlib

    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main(["--no-such-flag"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err == f"error: unrecognized arguments: --no-such-flag (python -m {module} --help lists the flags)\n"
