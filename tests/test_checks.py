"""The shared validators: one line naming the key, the bad value and what is allowed."""

from __future__ import annotations

import dataclasses
import math

import pytest
from omegaconf import OmegaConf

from van_ablate import checks
from van_ablate.errors import ConfigError


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: checks.one_of("k", "x", ("a", "b")), "k='x': must be one of a, b"),
        (lambda: checks.at_least("k", 0, 1), "k=0: must be an integer >= 1"),
        (lambda: checks.at_least("k", True, 0), "k=True: must be an integer >= 0"),
        (lambda: checks.at_least("k", 1.5, 1), "k=1.5: must be an integer >= 1"),
        (lambda: checks.in_range("k", 2.0, 0.0, 1.0), "k=2.0: must be in [0.0, 1.0]"),
        (
            lambda: checks.in_range("k", 1.0, 0.0, 1.0, high_open=True),
            "k=1.0: must be in [0.0, 1.0)",
        ),
        (lambda: checks.in_range("k", "0.5", 0.0, 1.0), "k='0.5': must be in [0.0, 1.0]"),
    ],
)
def test_each_check_refuses_with_one_line_naming_key_value_and_allowed(call, message):
    with pytest.raises(ConfigError) as err:
        call()
    assert str(err.value) == message
    assert "\n" not in str(err.value)


def test_checks_pass_allowed_values_silently():
    checks.one_of("k", "a", ("a", "b"))
    checks.at_least("k", 1, 1)
    checks.in_range("k", 0.0, 0.0, 1.0, high_open=True)
    checks.in_range("k", 1, 0.0, 1.0)


def test_unknown_keys_are_refused_listing_the_fields_of_the_schema():
    @dataclasses.dataclass
    class Schema:
        name: str = ""
        root: str = ""

    checks.check_known_keys("data", {"name": "x"}, Schema)
    with pytest.raises(ConfigError, match=r"^data\.roots='/x': unknown key; allowed: name, root$"):
        checks.check_known_keys("data", {"name": "x", "roots": "/x"}, Schema)
    err = checks.unknown_key("lka.size", 7, ["kernel_size"], word="field")
    assert (err.key, str(err)) == ("lka.size", "lka.size=7: unknown field; allowed: kernel_size")


def test_first_line_of_an_exception_falls_back_to_its_type():
    assert checks.first_line(RuntimeError("\n  disk full\nmore")) == "disk full"
    assert checks.first_line(KeyError()) == "KeyError"


@pytest.mark.parametrize("as_config", [False, True], ids=["plain", "omegaconf"])
def test_select_reads_dotted_paths_of_plain_dicts_and_configs(as_config):
    doc = {"best": {"val_top1": 75.4}, "final": None, "epochs": [{"loss": 2.0}, {"loss": 1.0}]}
    node = OmegaConf.create(doc) if as_config else doc
    assert checks.select(node, "best.val_top1") == 75.4
    assert checks.select(node, "epochs.1.loss") == 1.0
    assert checks.select(node, "best") == {"val_top1": 75.4}
    assert checks.select(node, "final.val_top1") is None
    assert math.isnan(checks.select(node, "missing.key", default=math.nan))
    assert checks.select(None, "best.val_top1", default=0) == 0
