"""Sweep files are checked by the same pydantic sections and error translator as the training config: every mistake
is one line naming the key's full place in the file (``resources.per_stage.teacher.nodes``), the types are the
config's strict ones, and a command-line resource goes through the same check."""
from __future__ import annotations

import copy

import pytest
import yaml

from lakd.sweep import make_plan
from lakd.sweep.spec import Resources, check_resources, resolve_source

TINY = yaml.safe_load(resolve_source("tiny").read_text())


def _raw(**edits) -> dict:
    raw = copy.deepcopy(TINY)
    for path, value in edits.items():
        *parents, last = path.split("__")
        node = raw
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value
    return raw


@pytest.mark.parametrize("edits, line", [
    ({"resources__gpus_per_node": 2.5}, "resources.gpus_per_node: expected an integer, got 2.5"),
    ({"resources__gpus_per_node": True}, "resources.gpus_per_node: expected an integer, got True"),
    ({"resources__cpus_per_task": 0}, "resources.cpus_per_task: must be >= 1, got 0"),
    ({"resources__nodse": 2}, "resources.nodse: unknown key (did you mean 'nodes'?); valid keys: account, "),
    ({"resources__per_stage": {"teacher": {"nodes": -1}}}, "resources.per_stage.teacher.nodes: must be >= 1, got -1"),
    ({"resources__per_stage": {"teachr": {}}}, "resources.per_stage: unknown stage 'teachr'; stages: teacher, "),
    ({"resources__setup": "module load cuda"}, "resources.setup: expected a list of str, got 'module load cuda'"),
    ({"resources__mem_gb": 0}, "resources.mem_gb: must be > 0, got 0"),
    ({"datasets__synthetic__shards__samples_per_shard": "many"},
     "datasets.synthetic.shards.samples_per_shard: expected an integer, got 'many'"),
    ({"datasets__synthetic__shardz": {}}, "datasets.synthetic.shardz: unknown key (did you mean 'shards'?); valid "
                                          "keys: config, overrides, shards"),
    ({"teachers__dlv3_r18_la__label_assisted": "yes"},
     "teachers.dlv3_r18_la.label_assisted: expected true or false, got 'yes'"),
    ({"pairs__0__student": KeyError}, "pairs[0].student: required key missing"),
    ({"seeds": [0, "1"]}, "seeds[1]: expected an integer, got '1'"),
])
def test_one_line_naming_the_key(edits, line):
    with pytest.raises(ValueError) as info:
        make_plan(_raw(**edits))
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"sweep file <mapping>: {line}"), text


def test_a_time_limit_in_minutes_is_a_number_too():
    """`time: 30` (YAML reads an integer) is 30 minutes, as Slurm reads it (Resources' own docstring example)."""
    plan = make_plan(_raw(resources__per_stage={"collect": {"time": 30}}))
    assert plan.jobs["collect"].resources.for_stage("collect").time == "30"


def test_command_line_resources_get_the_same_check():
    with pytest.raises(ValueError, match=r"resources.gpus_per_node: must be >= 0, got -1$"):
        make_plan(TINY, gpus_per_node=-1)
    r = check_resources({"nodes": 2, "per_stage": {"teacher": {"time": "48:00:00"}}})
    assert isinstance(r, Resources) and r.for_stage("teacher").time == "48:00:00" and r.for_stage("student").nodes == 2
