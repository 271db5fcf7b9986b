"""AWX's own validation of a job template survey, to check the collection's surveys without an AWX.

``post_errors`` is what AWX 23.x/24.x checks when a survey spec is POSTed to
``/api/v2/job_templates/<id>/survey_spec/`` (``JobTemplateSurveySpec._validate_spec_data`` in
awx/api/views/__init__.py, the same from 23.0.0 to 24.6.1), with its messages. AWX stops at the first
error of an item; this returns them all. ``launch_errors`` adds what AWX only checks at launch, in
``SurveyJobTemplateMixin._survey_element_validation`` (awx/main/models/mixins.py), where a default
that fails is silently dropped: a default must fit its own question's min/max and choices.
"""

from __future__ import annotations

from typing import Any

TYPES: dict[str, Any] = {
    "text": str,
    "textarea": str,
    "password": str,
    "multiplechoice": str,
    "multiselect": str,
    "integer": int,
    "float": (float, int),
}
_LABELS = {"text": "string", "textarea": "string", "password": "string", "multiplechoice": "string",
           "multiselect": "string", "integer": "integer", "float": "float"}  # fmt: skip


def post_errors(survey: Any) -> list[str]:
    """AWX's checks of a survey spec POST, in its order and words."""
    if not isinstance(survey, dict):
        return ["the survey spec must be a JSON object"]
    errors = []
    for field, expected, label in (
        ("name", str, "string"),
        ("description", str, "string"),
        ("spec", list, "list of items"),
    ):
        if field not in survey:
            errors.append(f"Field '{field}' is missing from survey spec.")
        elif not isinstance(survey[field], expected):
            errors.append(f"Expected {label} for field '{field}', received {type(survey[field]).__name__} type.")
    if isinstance(survey.get("spec"), list) and not survey["spec"]:
        errors.append("'spec' doesn't contain any items.")
    if errors:
        return errors
    seen: set[str] = set()
    for idx, item in enumerate(survey["spec"]):
        errors += _item_errors(idx, item, seen)
    return errors


def _item_errors(idx: int, item: Any, seen: set[str]) -> list[str]:
    if not isinstance(item, dict):
        return [f"Survey question {idx} is not a json object."]
    for field, expected, label in (
        ("type", str, "string"),
        ("question_name", str, "string"),
        ("variable", str, "string"),
        ("required", bool, "boolean"),
    ):
        if field not in item:
            return [f"'{field}' missing from survey question {idx}"]
        if not isinstance(item[field], expected):
            return [f"'{field}' in survey question {idx} expected to be {label}."]
    if item["variable"] in seen:
        return [f"'variable' '{item['variable']}' duplicated in survey question {idx}."]
    seen.add(item["variable"])
    qtype = item["type"]
    if qtype not in TYPES:
        return [f"'{qtype}' in survey question {idx} is not one of '{', '.join(TYPES)}' allowed question types."]
    if "default" in item and item["default"] != "" and not isinstance(item["default"], TYPES[qtype]):
        return [f"Default value {item['default']} in survey question {idx} expected to be {_LABELS[qtype]}."]
    for key in ("min", "max"):
        if key in item and item[key] is not None and not isinstance(item[key], int):
            return [f"The {key} limit in survey question {idx} expected to be integer."]
    if qtype in ("multiplechoice", "multiselect"):
        if "choices" not in item:
            return [f"Survey question {idx} of type {qtype} must specify choices."]
        if "default" in item:
            lines = [line for line in str(item["default"]).splitlines() if line.strip()]
            if qtype == "multiplechoice" and len(lines) > 1:
                return ["Multiple Choice (Single Select) can only have one default value."]
            if any(line not in item["choices"] for line in lines):
                return ["Default choice must be answered from the choices listed."]
    if isinstance(item.get("default"), str) and item["default"].startswith("$encrypted$"):
        if qtype != "password":
            return [
                f"$encrypted$ is a reserved keyword for password question defaults, survey question {idx} "
                f"is type {qtype}."
            ]
        return [f"$encrypted$ is a reserved keyword, may not be used for new default in position {idx}."]
    return []


def launch_errors(survey: dict) -> list[str]:
    """What AWX checks of each default at launch (a default that fails is dropped without a word)."""
    errors = []
    for item in survey["spec"]:
        default, qtype, name = item.get("default"), item["type"], item["variable"]
        if default in (None, ""):
            continue
        low, high = item.get("min"), item.get("max")
        if qtype in ("text", "textarea", "password"):
            if low not in (None, "") and len(default) < int(low):
                errors.append(
                    f"'{name}' value {default} is too small (length is {len(default)} must be at least {low})."
                )
            if high not in (None, "") and len(default) > int(high):
                errors.append(f"'{name}' value {default} is too large (must be no more than {high}).")
        elif qtype in ("integer", "float"):
            cast = int if qtype == "integer" else float
            if low not in (None, "") and default < cast(low):
                errors.append(f"'{name}' value {default} is too small (must be at least {low}).")
            if high not in (None, "") and default > cast(high):
                errors.append(f"'{name}' value {default} is too large (must be no more than {high}).")
        else:
            choices = item["choices"] if isinstance(item["choices"], list) else item["choices"].splitlines()
            wrong = [line for line in default.splitlines() if line not in choices]
            if wrong:
                errors.append(f"Value {wrong[0]} for '{name}' expected to be one of {choices}.")
    return errors


def answer_errors(survey: dict, answers: dict) -> list[str]:
    """What AWX refuses of a launch's survey answers (a required one missing, a value out of its bounds)."""
    errors = []
    for item in survey["spec"]:
        name = item["variable"]
        value = answers.get(name, item.get("default"))
        if value in (None, ""):
            if item.get("required"):
                errors.append(f"'{name}' value missing")
            continue
        if item["type"] == "integer" and (isinstance(value, bool) or not isinstance(value, int)):
            errors.append(f"Value {value} for '{name}' expected to be an integer.")
            continue
        if item["type"] == "float" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            errors.append(f"Value {value} for '{name}' expected to be a numeric type.")
            continue
        errors += launch_errors({"spec": [dict(item, default=value)]})
    return errors
