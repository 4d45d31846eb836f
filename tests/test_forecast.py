"""A study's cost forecast: each row timed on this device, then trials x epochs x images."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module

import van_ablate.__main__  # noqa: F401  (registers the schema and the run-name resolver)
from van_ablate.config import validate
from van_ablate.paper.ablation import CONF_PACKAGE
from van_ablate.runs import ablations_from_overrides
from van_ablate.sweep.forecast import Forecast, RowCost, forecast

TINY = ["data.img_size=32", "data.num_train=64", "data.num_val=32", "train.epochs=2"]
TINY += ["train.batch_size=8", "train.eval_batch_size=16", "logger=none"]


def job(*overrides: str):
    with initialize_config_module(config_module=CONF_PACKAGE, version_base="1.3"):
        cfg = compose("config", overrides=[*TINY, *overrides])
    return validate(cfg, ablations_from_overrides(overrides))


def test_a_trial_costs_epochs_times_images_over_the_measured_speed():
    row = RowCost(
        "r", train_img_s=100.0, forward_img_s=400.0, num_train=3000, num_val=800, epochs=6
    )
    assert row.trial_s == pytest.approx(6 * (3000 / 100 + 800 / 400))  # 192 s, by hand


def test_the_total_is_the_rows_trials_added_and_the_worst_case_uses_max_seeds():
    a = RowCost("a", 100.0, 400.0, 3000, 800, 6)  # 192 s a trial
    b = RowCost("b", 50.0, 200.0, 3000, 800, 6)  # 384 s a trial
    cost = Forecast((a, b), expected={"a": 3, "b": 3}, worst={"a": 10, "b": 10}, threads=1)
    assert cost.expected_h == pytest.approx((3 * 192 + 3 * 384) / 3600)
    assert cost.worst_h == pytest.approx((10 * 192 + 10 * 384) / 3600)
    text = "\n".join(cost.lines())
    assert "3 to 10 trials" in text and "expected 0.48 h, worst case 1.60 h (6 trials)" in text


def test_rows_are_timed_on_this_device_with_their_own_data_sizes():
    cost = forecast(
        {"baseline": job("+ablation=baseline"), "dense_conv": job("+ablation=dense_conv")},
        expected={"baseline": 2, "dense_conv": 2},
    )
    base, dense = cost.rows
    assert (base.num_train, base.num_val, base.epochs) == (64, 32, 2)
    assert base.train_img_s > 0 and base.forward_img_s > 0
    # a dense 21x21 conv does far more work than the decomposed LKA at every width
    assert dense.train_img_s < base.train_img_s
    assert cost.expected_h == pytest.approx(2 * (base.trial_s + dense.trial_s) / 3600)
