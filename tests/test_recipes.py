"""Every shipped recipe loads, and the GPU ones state packing (it changes how many examples a step sees)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cybersecqwen.config import load_recipe

RECIPES = sorted((Path(__file__).resolve().parents[1] / "configs" / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_loads_and_says_how_many_examples_a_step_sees(path):
    recipe = load_recipe(path)
    text = path.read_text()
    assert "per_device_batch_size:" in text
    if recipe.train.liger:
        assert recipe.lora.target_modules == "all-linear" or "lm_head" not in recipe.lora.target_modules
    if "gpu" in path.name or "4b" in path.name:
        assert "packing:" in text  # the GPU recipes state it (it changes how many examples a step sees)

