"""Results files are untrusted: each crafted file is one line naming it and its first
problem; a file that passes every check makes a report, a page's tables and every
chart without an exception; nothing a file holds reaches the HTML unescaped."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from fedcore.experiment.results import ExperimentResult, ResultsError
from fedcore.experiment.results_file import MAX_FILE_BYTES
from fedcore.report import html, tables, text
from fedcore.report.figures import run_charts
from tests.test_golden import without_attack_fields

DATA = Path(__file__).parent / "data"
# A real run (phase all: isolated, federated with dropout failures, centralized), used
# here as input only: the files below are it with one value changed.
REAL = json.loads((DATA / "golden-lab.json").read_text())
SCRIPT = "</script><script>alert(1)</script>"


def read(data: object) -> ExperimentResult:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return ExperimentResult.read("r.json", raw)


def changed(path: str, value: object) -> dict:
    """`REAL` with the value at `path` (`"federated.history.1.accuracy"`) replaced."""
    data = copy.deepcopy(REAL)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    target = data
    for part in parents:
        target = target[part]
    target[last] = value
    return data


def test_the_real_file_loads_and_round_trips():
    result = read(REAL)
    assert without_attack_fields(result.to_dict()) == REAL | {"diverged": []}
    assert read(result.to_dict()) == result


CRAFTED = {
    "script in client": (
        changed("isolated.0.client", SCRIPT),
        "r.json: isolated[0].client: not a number",
    ),
    "string for an accuracy": (
        changed("federated.accuracy", "0.9"),
        "r.json: federated.accuracy: not a number",
    ),
    "accuracy out of range": (
        changed("federated.history.2.accuracy", 1.5),
        "r.json: federated.history[2].accuracy: 1.5 is not a fraction in [0, 1]",
    ),
    "NaN accuracy": (
        changed("centralized.accuracy", math.nan),
        "r.json: centralized.accuracy: nan is not a fraction in [0, 1]",
    ),
    "2x2 confusion matrix": (
        changed("federated.confusion", [[1, 2], [3, 4]]),
        "r.json: federated.confusion: 2 rows, not a 10x10 matrix",
    ),
    "ragged label counts": (
        changed("label_counts.1", [1, 2, 3]),
        "r.json: label_counts: row 1 has 3 values, not 10",
    ),
    "a client's label counts cut short": (
        changed("isolated.2.label_counts", [5] * 9),
        "r.json: isolated[2].label_counts: 9 values, not one per digit (10)",
    ),
    "negative count": (
        changed("isolated.0.confusion.3.4", -1),
        "r.json: isolated[0].confusion[3][4]: -1 is negative",
    ),
    "a round missing": (
        changed("federated.history", REAL["federated"]["history"][:3]),
        "r.json: federated.history: 3 values for 4 rounds and round 0",
    ),
    "rounds out of order": (
        changed("federated.history.1.round", 2),
        "r.json: federated.history[1].round: 2, not round 1",
    ),
    "markup as a subset": (
        changed("federated.subset_accuracy", {SCRIPT: 0.5}),
        "r.json: federated.subset_accuracy['</script><script>alert(1)</script>']: "
        "not a set of digits like '1,3,7'",
    ),
    "a client that is not one": (
        changed("federated.history.1.update_norm", {"7": 1.0}),
        "r.json: federated.history[1].update_norm: client 7 of 5",
    ),
    "text for a failure that is not text": (
        changed("federated.failures", [3]),
        "r.json: federated.failures[0]: not text",
    ),
    "a setting out of range": (
        changed("config.num_clients", 0),
        "r.json: config: num_clients must be between 2 and 10000, got 0",
    ),
    "an unknown field": (changed("federated.hello", 1), "r.json: federated: unknown field 'hello'"),
    "a missing field": (
        changed("federated", {"accuracy": 1}),
        "r.json: federated.history: missing",
    ),
    "a JSON list": ([1, 2], "r.json: not a fedcore results file (a JSON list without a 'config')"),
    "a foreign object": (
        {"hello": "world"},
        "r.json: not a fedcore results file (an object without a 'config')",
    ),
    "deep nesting": (
        b"[" * 100_000 + b"]" * 100_000,
        "r.json: not a fedcore results file (nested too deeply)",
    ),
    "not UTF-8": (b"\xff\xfe{}", "r.json: not a fedcore results file (not UTF-8 text)"),
    "a lone surrogate": (
        json.dumps(changed("federated.failures", ["\ud800"])).encode(),
        "r.json: federated.failures[0]: not valid text (a lone surrogate)",
    ),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_a_crafted_file_is_one_line_naming_its_first_problem(case):
    data, message = CRAFTED[case]
    with pytest.raises(ResultsError) as raised:
        read(data)
    assert str(raised.value) == message


def test_deep_nesting_inside_the_settings_is_one_line():
    nested = b'{"config": {"excluded_digits": ' + b"[" * 5000 + b"]" * 5000 + b"}}"
    with pytest.raises(ResultsError, match=r"^r\.json: not a fedcore results file \(nested"):
        read(nested)


def test_a_file_over_the_size_limit_is_refused_unread(monkeypatch, tmp_path):
    monkeypatch.setattr("fedcore.experiment.results_file.MAX_FILE_BYTES", 2**20)
    path = tmp_path / "big.json"
    path.write_bytes(b"[" * (2**20 + 1))  # parsed, it would be too deep
    with pytest.raises(ResultsError, match="big.json: larger than the 1 MB a results file may be"):
        ExperimentResult.load(path)
    assert MAX_FILE_BYTES >= 64 * 2**20  # a real 100-client, 1000-round file fits
    with pytest.raises(ResultsError, match="cannot be read"):
        ExperimentResult.load(tmp_path)  # a folder


def mutations():
    """One value at every place of the schema (the last item of each list), each
    replaced by values of other types and ranges, and each key removed."""
    bad = [None, True, -1, 10**30, math.inf, "<b>x</b>", [], {"1": "x"}]
    places: list[tuple[object, ...]] = []

    def walk(value, path):
        places.append(path)
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, (*path, key))
        elif isinstance(value, list) and value:
            walk(value[-1], (*path, len(value) - 1))  # the last: client 5, the final round

    walk(REAL, ())
    for path in places[1:]:
        for value in [*bad, "DELETE"]:
            yield path, value


def mutated(path, value):
    data = copy.deepcopy(REAL)
    target = data
    for part in path[:-1]:
        target = target[part]
    if value == "DELETE":
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


def test_every_mutated_file_is_refused_in_one_line_or_reported_whole(monkeypatch):
    """No value of the wrong type, range or shape anywhere in a real file reaches
    the tables, the text or the charts: either one line, or everything works."""
    # the charts built and their data serialized, not drawn (vl-convert: seconds each)
    monkeypatch.setattr(html, "to_svg", lambda chart: json.dumps(chart.to_dict(validate=False)))
    refused = reported = 0
    for path, value in mutations():
        data = mutated(path, value)
        try:
            result = read(data)
        except ResultsError as error:
            line = str(error)
            assert "\n" not in line and line.startswith("r.json: ") and len(line) < 400, line
            refused += 1
            continue
        text.format_table(result)
        tables.lab_summary(result)
        tables.runs_final_accuracies([("a", result), ("b", result)])
        page = html.report_html([("a", result)])  # every chart of `run_charts`
        assert "<b>x</b>" not in page, path
        reported += 1
    assert refused > 400 and reported > 40, (refused, reported)


def test_nothing_a_file_holds_reaches_the_html_unescaped(tmp_path):
    data = changed("federated.failures", [SCRIPT, "client 1 failed in round 2: <img onerror=x>"])
    data["config"]["data_dir"] = SCRIPT
    data["timings"][SCRIPT] = 1.0
    result = read(data)
    page = html.report_html([(SCRIPT, result), (f"{SCRIPT}.json", result)])
    assert "<script" not in page and "<img" not in page
    assert page.count("&lt;/script&gt;&lt;script&gt;alert(1)") >= 4  # names and failures
    # the terminal table prints what it holds: text, never markup interpreted there
    assert SCRIPT in text.format_table(result)


def test_a_loss_that_is_not_finite_is_a_diverged_run_not_a_bad_file():
    data = changed("federated.history.2.client_loss.1", [math.nan])
    data["federated"]["history"][3]["loss"] = math.inf
    data["isolated"][0]["loss"] = [math.inf]
    data["centralized"]["loss"][1] = math.nan
    result = read(data)
    assert result.diverged == [
        "isolated model of client 1: diverged: a training loss is not finite",
        "federated: diverged: the loss is nan in round 2",
        "centralized: diverged: the loss is nan in epoch 2",
    ]
    assert read(result.to_json().encode()) == result  # JSON's NaN and Infinity, read back
    page = html.report_html([("nan", result)])  # drawn by vl-convert, gaps where not finite
    assert page.count("<svg") == len(run_charts(result))
    assert "federated: diverged: the loss is nan in round 2" in page
    assert read(REAL).diverged == []
