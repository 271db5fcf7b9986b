"""The AWX job templates and surveys of awx/: valid by AWX's own rules, and wired to what the
playbooks and the rollout role really take."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from tests.support.awx_survey import launch_errors, post_errors

REPO = Path(__file__).resolve().parents[2]
SURVEYS = sorted((REPO / "awx" / "surveys").glob("*.json"))
TEMPLATES = sorted((REPO / "awx" / "job_templates").glob("*.yml"))
# Parameters of awx.awx.job_template (awx.awx 24.6) that these definitions may set.
JOB_TEMPLATE_PARAMETERS = {
    "name", "description", "job_type", "inventory", "project", "playbook", "execution_environment",
    "credentials", "survey_enabled", "survey_spec", "ask_variables_on_launch", "ask_limit_on_launch",
    "ask_inventory_on_launch", "ask_credential_on_launch", "ask_tags_on_launch", "ask_skip_tags_on_launch",
    "ask_diff_mode_on_launch", "ask_verbosity_on_launch", "allow_simultaneous", "use_fact_cache", "forks",
    "limit", "verbosity", "extra_vars", "diff_mode", "timeout", "labels", "job_slice_count",
}  # fmt: skip
# The argument spec types an answer of each survey type satisfies (a whole number is a float too).
SURVEY_TYPES = {
    "text": {"str"},
    "textarea": {"str"},
    "password": {"str"},
    "integer": {"int", "float"},
    "float": {"float"},
}


def _rollout_options() -> dict[str, dict]:
    specs = yaml.safe_load((REPO / "roles" / "rollout" / "meta" / "argument_specs.yml").read_text())
    return specs["argument_specs"]["deploy"]["options"]


def test_there_is_a_survey_and_a_job_template_for_deploy_and_rollback():
    assert {p.stem for p in SURVEYS} >= {"deploy", "rollback"}
    assert {p.stem for p in TEMPLATES} == {p.stem for p in SURVEYS}


@pytest.mark.parametrize("path", SURVEYS, ids=lambda p: p.stem)
def test_awx_accepts_the_survey_and_every_default_survives_launch(path):
    survey = json.loads(path.read_text())
    assert post_errors(survey) == []
    assert launch_errors(survey) == []


@pytest.mark.parametrize("path", SURVEYS, ids=lambda p: p.stem)
def test_every_survey_answer_is_an_extra_var_the_playbook_takes_with_its_type(path):
    survey = json.loads(path.read_text())
    playbook = (REPO / "playbooks" / f"{path.stem}.yml").read_text()
    options = _rollout_options()
    for item in survey["spec"]:
        name = item["variable"]
        if name.startswith("rollout_"):
            assert name in options, f"{name} is not a variable of the rollout role"
            assert options[name]["type"] in SURVEY_TYPES[item["type"]], name
            if "choices" in options[name]:
                assert item["type"] == "multiplechoice" and set(item["choices"]) <= set(options[name]["choices"])
        else:
            assert re.search(rf"\b{name}\b", playbook.split("\n- name:", 1)[1]), f"{path.stem}.yml does not use {name}"
            assert re.search(rf"\b{name}\b", playbook.split("\n- name:", 1)[0]), (
                f"{path.stem}.yml does not document {name}"
            )


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_job_template_runs_its_playbook_with_its_survey_one_job_at_a_time(path):
    template = yaml.safe_load(path.read_text())
    assert set(template) <= JOB_TEMPLATE_PARAMETERS, set(template) - JOB_TEMPLATE_PARAMETERS
    assert (REPO / template["playbook"]).is_file()
    assert template["playbook"] == f"playbooks/{path.stem}.yml"
    assert template["survey_enabled"] is True
    assert template["allow_simultaneous"] is False, "two deploys of a pool at once would mix releases"
    assert all(isinstance(v, bool) for k, v in template.items() if k.startswith("ask_"))
    assert template["job_type"] == "run"


def _good() -> dict:
    return json.loads((REPO / "awx" / "surveys" / "deploy.json").read_text())


def _broken(change) -> dict:
    survey = copy.deepcopy(_good())
    change(survey)
    return survey


# Each of AWX's rules, broken once: the validator says what AWX says (it is not a check that cannot fail).
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.pop("spec"), "Field 'spec' is missing from survey spec."),
        (lambda s: s.update(spec={}), "Expected list of items for field 'spec', received dict type."),
        (lambda s: s.update(spec=[]), "'spec' doesn't contain any items."),
        (lambda s: s["spec"][0].pop("variable"), "'variable' missing from survey question 0"),
        (lambda s: s["spec"][1].update(required="true"), "'required' in survey question 1 expected to be boolean."),
        (lambda s: s["spec"][1].update(variable="pool"), "'variable' 'pool' duplicated in survey question 1."),
        (
            lambda s: s["spec"][0].update(type="number"),
            "'number' in survey question 0 is not one of 'text, textarea, password, multiplechoice, multiselect, "
            "integer, float' allowed question types.",
        ),
        (lambda s: s["spec"][3].update(default="1"), "Default value 1 in survey question 3 expected to be integer."),
        (lambda s: s["spec"][5].update(max=1.0), "The max limit in survey question 5 expected to be integer."),
        (
            lambda s: s["spec"][0].update(type="multiplechoice"),
            "Survey question 0 of type multiplechoice must specify choices.",
        ),
        (
            lambda s: s["spec"][0].update(type="multiplechoice", choices=["rq", "celery"], default="rq\ncelery"),
            "Multiple Choice (Single Select) can only have one default value.",
        ),
        (
            lambda s: s["spec"][0].update(type="multiplechoice", choices=["rq", "celery"], default="redis"),
            "Default choice must be answered from the choices listed.",
        ),
        (
            lambda s: s["spec"][0].update(default="$encrypted$"),
            "$encrypted$ is a reserved keyword for password question defaults, survey question 0 is type text.",
        ),
    ],
)
def test_the_validator_refuses_what_awx_refuses_in_its_words(change, message):
    assert message in post_errors(_broken(change))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s["spec"][3].update(default=5000), "'canary' value 5000 is too large (must be no more than 1000)."),
        (lambda s: s["spec"][2].update(default=""), None),  # an empty default is no default
        (
            lambda s: s["spec"][2].update(min=10),
            "'target' value workers is too small (length is 7 must be at least 10).",
        ),
    ],
)
def test_a_default_awx_would_drop_at_launch_is_found(change, message):
    errors = launch_errors(_broken(change))
    assert errors == ([message] if message else [])


def test_a_launch_awx_would_refuse_is_refused_before_any_job_runs():
    from tests.support.awx_survey import answer_errors

    survey = json.loads((REPO / "awx" / "surveys" / "drill.json").read_text())
    good = {"pool": "shop", "good_version": "1.4.0", "bad_version": "1.2.1", "target": "workers"}
    assert answer_errors(survey, good) == []  # drill_settle_timeout takes its default
    assert answer_errors(survey, {**good, "pool": ""}) == ["'pool' value missing"]
    assert answer_errors(survey, {**good, "drill_settle_timeout": 1}) == [
        "'drill_settle_timeout' value 1 is too small (must be at least 5)."
    ]
    assert answer_errors(survey, {**good, "drill_settle_timeout": "60"}) == [
        "Value 60 for 'drill_settle_timeout' expected to be an integer."
    ]
