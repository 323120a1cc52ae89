"""The recommended configurations ``configs/*.toml``: each is read by the same reader as
``combonet train --config``, takes only settings its model uses, and builds a model whose
initial weights are certified (training keeps them so; the accuracies are measured by
``combonet compare``, docs/results.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

import combonet as cn
from combonet.models.registry import build_model, is_combo
from combonet.train import TrainConfig
from combonet.train.config import read_config_file

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml"))
#: input features per step of each sequence task
FEATURES = {"pdigits": 1, "mnist1d": 1, "psmnist": 1, "scifar10": 3}


def test_the_four_recommended_configurations_exist():
    names = {p.stem for p in CONFIGS}
    assert {"pdigits", "mnist1d", "psmnist", "scifar10"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_configuration_builds_a_certified_model(path):
    data = read_config_file(path)
    cfg = TrainConfig.from_dict(data, source=str(path)).validate()
    unused = cfg.not_applicable()
    assert not [k for k in data if k.replace("-", "_") in unused], unused
    model = build_model(cfg, FEATURES[cfg.task], 10)
    assert is_combo(model)
    assert cn.certify(model).certified
