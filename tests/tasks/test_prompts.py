"""Training and serving text equals evaluation text: each task rebuilds the benchmark's Prompt column."""

import re

import pytest

from cybersecqwen.tasks import get_task
from cybersecqwen.tasks.ate import technique_list


@pytest.mark.parametrize("name, minimum", [("cti-mcq", 0.99), ("cti-rcm", 1.0), ("cti-rcm-2021", 0.99), ("cti-vsp", 1.0), ("cti-taa", 1.0)])
def test_prompt_column_is_rebuilt_from_fields(mirror, name, minimum):
    task = get_task(name)
    items = task.load(mirror)
    same = sum(task.build_prompt(item.fields) == item.prompt for item in items)
    assert same / len(items) >= minimum, f"{same}/{len(items)}"


def test_ate_prompt_shape_with_the_benchmark_technique_list(mirror):
    task = get_task("cti-ate")
    items = task.load(mirror)
    same = 0
    for item in items:
        listed = re.findall(r"(T\d{4}) : (.+?)(?= T\d{4} : |\s{5}$)", item.prompt.split("ID    : Name ", 1)[1])
        fields = dict(item.fields, TechniqueList=technique_list(listed, item.fields["Platform"]))
        same += task.build_prompt(fields) == item.prompt
    assert same >= len(items) - 2, same


@pytest.mark.parametrize("name", ["cti-rcm", "cti-vsp", "cti-ate", "cti-taa"])
def test_item_text_recovers_the_item_from_its_prompt(mirror, name):
    """The heads and the fusion read a corpus example's text back out of its prompt: the inverse of build_prompt."""
    task = get_task(name)
    items = task.load(mirror)
    field = task.item_text_fields[0]
    recovered = sum(task.item_text(item.prompt) == item.fields[field] for item in items)
    assert recovered >= len(items) - 3, f"{recovered}/{len(items)}"
    with pytest.raises(Exception, match="prompt was expected"):
        get_task("cti-rcm").item_text("not a CTI-RCM prompt")
