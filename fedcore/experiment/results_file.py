"""A results file someone hands us, read as untrusted input: bounded in size and nesting,
and every value checked (type, range, shape, agreement with its settings) before any
report, chart or page uses it.

A file that fails is one line naming it and its first problem, by the path of the
value (`r.json: federated.accuracy: not a number`), never a traceback from deep
inside pandas or altair. The types are read from the results' own dataclasses
(their annotations, `typing.get_type_hints`), so a field is described once; the
ranges and shapes come from each field's `metadata` (the `Rule`s below).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.specs import ConfigError, format_digits

MEGABYTE = 2**20
# Far above any real file (100 clients x 1000 rounds x 20 epochs writes about 70 MB),
# low enough that parsing it stays within a laptop's memory.
MAX_FILE_BYTES = 128 * MEGABYTE
MESSAGE_CHARACTERS = 300  # a problem's line is cut here: a crafted value could be huge
NOT_RESULTS = "not a fedcore results file"


class ResultsError(ValueError):
    """A results file that cannot be loaded; the message names the file."""


class Problem(Exception):
    """The first thing wrong in a file: where (`federated.history[2].loss`) and what."""

    def __init__(self, path: str, what: str) -> None:
        super().__init__(f"{path}: {what}" if path else what)


# ------------------------------------------------------------------ the rules


@dataclass(frozen=True)
class Rule:
    """What a field's values must be beyond their type: each number under it
    (`number`), each key of a mapping under it (`key`), the whole value (`whole`);
    each returns what is wrong, or None."""

    number: Callable[[float], str | None] | None = None
    key: Callable[[str], str | None] | None = None
    whole: Callable[[Any], str | None] | None = None

    def metadata(self) -> dict[str, Rule]:
        return {"rule": self}


def _fraction(value: float) -> str | None:
    return None if 0 <= value <= 1 else f"{value!r} is not a fraction in [0, 1]"


def _count(value: float) -> str | None:
    return None if value >= 0 else f"{value!r} is negative"


def _seconds(value: float) -> str | None:
    return None if math.isfinite(value) and value >= 0 else f"{value!r} is not a duration"


def _epsilon(value: float) -> str | None:
    return None if value >= 0 else f"{value!r} is not an epsilon (>= 0)"  # inf allowed


def _digit(value: float) -> str | None:
    return None if 0 <= value <= 9 else f"{value!r} is not a digit 0-9"


def _client_number(value: float) -> str | None:
    return None if value >= 1 else f"{value!r} is not a client number"


def _client_key(key: str) -> str | None:
    """`"2"`: a client number as JSON keys spell it."""
    return None if key.isdigit() and str(int(key)) == key and key != "0" else "not a client number"


def _subset_key(key: str) -> str | None:
    """`"1,3,7"`: a missing-digit subset's name (distinct digits, as `format_digits` writes)."""
    digits = key.split(",")
    if all(d.isdigit() and len(d) == 1 for d in digits) and len(set(digits)) == len(digits):
        return None
    return "not a set of digits like '1,3,7'"


def _rows_of(length: int) -> Callable[[Any], str | None]:
    """Every row of a matrix has `length` values (a row per client, a column per digit)."""

    def check(rows: list[list[Any]]) -> str | None:
        bad = next((i for i, row in enumerate(rows) if len(row) != length), None)
        return None if bad is None else f"row {bad} has {len(rows[bad])} values, not {length}"

    return check


def _per_digit(values: list[Any]) -> str | None:
    """Ten values, one per digit, or none (results saved before it was recorded)."""
    return None if len(values) in (0, 10) else f"{len(values)} values, not one per digit (10)"


def _confusion(rows: list[list[int]]) -> str | None:
    return (None if len(rows) == 10 else f"{len(rows)} rows, not a 10x10 matrix") or _rows_of(10)(
        rows
    )


def _distinct(values: list[Any]) -> str | None:
    return None if len(set(values)) == len(values) else "repeats a value"


def _decibels(value: float) -> str | None:
    return None if 0 <= value <= 100 else f"{value!r} is not a PSNR in [0, 100] dB"


def _similarity(value: float) -> str | None:
    return None if -1 <= value <= 1 else f"{value!r} is not an SSIM in [-1, 1]"


def _pixel(value: float) -> str | None:
    return None if 0 <= value <= 255 else f"{value!r} is not a pixel value 0-255"


def _image(values: list[Any]) -> str | None:
    return None if len(values) == 784 else f"{len(values)} pixels, not a 28x28 image (784)"


FRACTIONS = Rule(number=_fraction)
COUNTS = Rule(number=_count)
SECONDS = Rule(number=_seconds)
EPSILON = Rule(number=_epsilon)
DIGITS = Rule(number=_digit, whole=_distinct)
PER_DIGIT_FRACTIONS = Rule(number=_fraction, whole=_per_digit)
PER_DIGIT_COUNTS = Rule(number=_count, whole=_per_digit)
SUBSET_FRACTIONS = Rule(number=_fraction, key=_subset_key)
PER_CLIENT = Rule(key=_client_key)
CLIENT = Rule(number=_client_number)
CLIENTS = Rule(number=_client_number, whole=_distinct)
CONFUSION = Rule(number=_count, whole=_confusion)
CLIENT_DIGIT_COUNTS = Rule(number=_count, whole=_rows_of(10))
DECIBELS = Rule(number=_decibels)
SIMILARITY = Rule(number=_similarity)
IMAGE = Rule(number=_pixel, whole=_image)


# ------------------------------------------------------------ reading a file


def read_bytes(path: str | Path) -> bytes:
    """The file's bytes, at most `MAX_FILE_BYTES + 1` of them (a device or a huge file
    is not read to its end)."""
    try:
        with open(path, "rb") as file:
            return file.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise ResultsError(f"{path}: cannot be read ({error.strerror or error})") from error


def parse_json(name: str, data: bytes) -> Any:
    """The JSON value of a file's bytes; `ResultsError` naming `name` if it is too large,
    not UTF-8, not JSON, or nested too deeply for Python's parser."""
    if len(data) > MAX_FILE_BYTES:
        raise ResultsError(
            f"{name}: larger than the {MAX_FILE_BYTES // MEGABYTE} MB a results file may be"
        )
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ResultsError(f"{name}: {NOT_RESULTS} (not UTF-8 text)") from None
    except RecursionError:
        raise ResultsError(f"{name}: {NOT_RESULTS} (nested too deeply)") from None
    except ValueError as error:  # JSONDecodeError, and ints beyond Python's digit limit
        raise ResultsError(_cut(f"{name}: {NOT_RESULTS} (not JSON: {error})")) from None


def checked(name: str, value: Any, cls: type, build: Callable[[Any], Any]) -> Any:
    """`build(value)` once `value` has the shape of the dataclass `cls` (a results
    object); then the built object agrees with its settings (`agreement`).
    `ResultsError` naming `name` and the first problem otherwise."""
    try:
        if not isinstance(value, dict) or "config" not in value:
            what = "an object" if isinstance(value, dict) else f"a JSON {_json_type(value)}"
            raise Problem("", f"{NOT_RESULTS} ({what} without a 'config')")
        check_object(value, cls, "")
        built = build(value)
        agreement(built)
        return built
    except Problem as problem:
        raise ResultsError(_cut(f"{name}: {problem}")) from None
    except RecursionError:  # a setting nested deep enough to exhaust Python's stack
        raise ResultsError(f"{name}: {NOT_RESULTS} (nested too deeply)") from None


def _cut(message: str) -> str:
    return message if len(message) <= MESSAGE_CHARACTERS else message[:MESSAGE_CHARACTERS] + "..."


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "true/false"}
    return "null" if value is None else names.get(type(value), "number")


# ------------------------------------------------------------- type checks


def _key_text(key: str) -> str:
    return repr(key if len(key) <= 40 else key[:40] + "...")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """A dataclass's annotations, evaluated once (a file of 1000 rounds asks 1000 times)."""
    return get_type_hints(cls)


def check_object(value: Any, cls: type, path: str) -> None:
    """`value` (from JSON) has the fields of the dataclass `cls`: the required ones,
    no others, each of its annotated type and within its field's `Rule`."""
    if not isinstance(value, dict):
        raise Problem(path, "not an object")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    written = set(getattr(cls, "WRITTEN_FIELDS", ()))  # derived values `to_dict` adds
    for key in value:
        if key not in fields and key not in written:
            raise Problem(path, f"unknown field {_key_text(key)}")
    for name, field in fields.items():
        where = f"{path}.{name}" if path else name
        if name not in value:
            required = field.default is dataclasses.MISSING
            if required and field.default_factory is dataclasses.MISSING:
                raise Problem(where, "missing")
            continue
        rule = field.metadata.get("rule", Rule())
        check_value(value[name], hints[name], where, rule)
        if rule.whole is not None and value[name] is not None:
            whole = rule.whole(value[name])
            if whole:
                raise Problem(where, whole)


def check_value(value: Any, hint: Any, path: str, rule: Rule) -> None:
    """`value` is of the type `hint` (an annotation of the results' dataclasses)."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):  # `X | None`
        if value is None and type(None) in get_args(hint):
            return
        (hint,) = [arg for arg in get_args(hint) if arg is not type(None)]
        origin = get_origin(hint)
    if hint is ExperimentConfig:
        _check_config(value, path)
    elif dataclasses.is_dataclass(hint):
        check_object(value, hint, path)
    elif origin is list:
        if not isinstance(value, list):
            raise Problem(path, "not a list")
        (item,) = get_args(hint)
        for index, entry in enumerate(value):
            check_value(entry, item, f"{path}[{index}]", rule)
    elif origin is dict:
        if not isinstance(value, dict):
            raise Problem(path, "not an object")
        _, item = get_args(hint)
        for key, entry in value.items():
            where = f"{path}[{_key_text(key)}]"
            _check_text(key, where)
            if rule.key is not None and (wrong := rule.key(key)):
                raise Problem(where, wrong)
            check_value(entry, item, where, rule)
    elif hint is str:
        if not isinstance(value, str):
            raise Problem(path, "not text")
        _check_text(value, path)
    elif hint is int or hint is float:
        _check_number(value, hint, path, rule)
    else:  # a type the results do not use: a new field needs a case here
        raise TypeError(f"{path}: no check for {hint!r}")


def _check_number(value: Any, hint: type, path: str, rule: Rule) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Problem(path, "not a number")
    if hint is int and not isinstance(value, int):
        raise Problem(path, f"{value!r} is not a whole number")
    if rule.number is not None and (wrong := rule.number(value)):
        raise Problem(path, wrong)


def _check_text(value: str, path: str) -> None:
    """Text that can be written out again: no lone surrogates (JSON's `\\ud800`)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Problem(path, "not valid text (a lone surrogate)") from None


def _check_config(value: Any, path: str) -> None:
    """The settings, checked by the config itself (its messages name the setting)."""
    if not isinstance(value, dict):
        raise Problem(path, "not an object")
    for key, entry in value.items():
        _check_text(key, path)
        if isinstance(entry, str):
            _check_text(entry, f"{path}.{key}")
    try:
        ExperimentConfig.from_dict(value)
    except (ConfigError, TypeError) as error:
        raise Problem(path, str(error)) from None


# ----------------------------------------------- agreement with the settings


def agreement(result: Any) -> None:
    """An `ExperimentResult` whose values agree with its settings and with each other:
    one isolated model per client, numbered in order; one history entry per round;
    the same missing-digit subsets for every model; matrices of the right size.

    Every report, chart and page relies on these (a client's own subset is looked
    up in the federated model's scores, rounds are counted from 0).
    """
    config = result.config
    clients, epochs = config.num_clients, config.local_epochs
    subsets = _subsets(result)
    if result.isolated is not None:
        if len(result.isolated) != clients:
            raise Problem("isolated", f"{len(result.isolated)} models for {clients} clients")
        for index, model in enumerate(result.isolated):
            where = f"isolated[{index}]"
            if model.client != index + 1:
                raise Problem(f"{where}.client", f"{model.client!r}, not client {index + 1}")
            if (model.missing_accuracy is None) != (not model.excluded):
                raise Problem(f"{where}.missing_accuracy", "does not match its excluded digits")
            if model.excluded and format_digits(sorted(model.excluded)) not in subsets:
                raise Problem(f"{where}.excluded", "its missing digits have no subset score")
            _length(model.loss, epochs, f"{where}.loss", "epochs")
            if bool(model.label_counts) != bool(result.isolated[0].label_counts):
                raise Problem(f"{where}.label_counts", "given for some clients only")
    if result.federated is not None:
        _check_history(result.federated, config)
    if result.centralized is not None:
        if result.centralized.epochs != config.total_local_epochs:
            raise Problem(
                "centralized.epochs", f"not rounds x local epochs ({config.total_local_epochs})"
            )
        _length(result.centralized.loss, config.total_local_epochs, "centralized.loss", "epochs")
    if result.label_counts:
        _length(result.label_counts, clients, "label_counts", "clients")
    if result.cross_accuracy is not None:
        _length(result.cross_accuracy, clients, "cross_accuracy", "clients")
        _rows = _rows_of(clients)(result.cross_accuracy)
        if _rows:
            raise Problem("cross_accuracy", _rows)


def _check_history(federated: Any, config: ExperimentConfig) -> None:
    history = federated.history
    reached = federated.rounds_to_target
    if config.stop_at_target == "yes" and reached is not None:  # it ended at the target
        _length(history, reached + 1, "federated.history", "rounds to the target and round 0")
    else:
        _length(history, config.num_rounds + 1, "federated.history", "rounds and round 0")
    for index, entry in enumerate(history):
        where = f"federated.history[{index}]"
        if entry.round != index:
            raise Problem(f"{where}.round", f"{entry.round!r}, not round {index}")
        for field in ("client_loss", "update_norm", "update_cosine"):
            too_high = [k for k in getattr(entry, field) if int(k) > config.num_clients]
            if too_high:
                raise Problem(f"{where}.{field}", f"client {too_high[0]} of {config.num_clients}")
        for client, losses in entry.client_loss.items():
            _length(losses, config.local_epochs, f"{where}.client_loss[{client!r}]", "epochs")
        if entry.kept_clients and max(entry.kept_clients) > config.num_clients:
            raise Problem(f"{where}.kept_clients", f"client {max(entry.kept_clients)} of "
                          f"{config.num_clients}")  # fmt: skip
        if (entry.attack_success is None) != (config.attack_name != "backdoor"):
            raise Problem(f"{where}.attack_success", "given only for a backdoor attack")
    if federated.accuracy != history[-1].accuracy:
        raise Problem("federated.accuracy", "is not the last round's accuracy")
    if federated.attack_success != history[-1].attack_success:
        raise Problem("federated.attack_success", "is not the last round's attack success")
    if reached is not None and not 1 <= reached <= config.num_rounds:
        raise Problem("federated.rounds_to_target", f"{reached!r} is not one of the rounds")
    if (federated.leakage is None) != (config.leakage == "off"):
        raise Problem("federated.leakage", "given only with the leakage setting")
    if federated.leakage is not None:
        _check_leakage(federated.leakage, config)


def _check_leakage(leakage: list[Any], config: ExperimentConfig) -> None:
    """One entry per client, in order; an attacked update of one of the rounds, an
    unseen one (round 0) with nothing inferred; images only with their scores."""
    _length(leakage, config.num_clients, "federated.leakage", "clients")
    for index, entry in enumerate(leakage):
        where = f"federated.leakage[{index}]"
        if entry.client != index + 1:
            raise Problem(f"{where}.client", f"{entry.client!r}, not client {index + 1}")
        if not 0 <= entry.round <= config.num_rounds:
            raise Problem(f"{where}.round", f"{entry.round!r} is not one of the rounds")
        if (entry.round == 0) != (entry.inferred_missing is None):
            raise Problem(f"{where}.inferred_missing", "given only for an update attacked")
        if (entry.reconstruction is None) != (entry.psnr_db is None) or (entry.matched is None) != (
            entry.psnr_db is None
        ):
            raise Problem(f"{where}.reconstruction", "given only with its PSNR, and its match")
        if (entry.images_recovered or 0) > sum(entry.label_counts):
            raise Problem(f"{where}.images_recovered", "more than the images it trained on")


def _subsets(result: Any) -> set[str]:
    """The missing-digit subsets every scored model has; `Problem` if they differ."""
    scored = [
        (f"isolated[{i}].subset_accuracy", model.subset_accuracy)
        for i, model in enumerate(result.isolated or [])
    ]
    if result.federated is not None:
        scored += [
            (f"federated.history[{i}].subset_accuracy", entry.subset_accuracy)
            for i, entry in enumerate(result.federated.history)
        ]
        scored.append(("federated.subset_accuracy", result.federated.subset_accuracy))
    if result.centralized is not None:
        scored.append(("centralized.subset_accuracy", result.centralized.subset_accuracy))
    first = set(scored[0][1]) if scored else set()
    for where, scores in scored:
        if set(scores) != first:
            raise Problem(where, "not the same missing-digit subsets as the other models")
    return first


def _length(values: list[Any], expected: int, path: str, what: str) -> None:
    if len(values) != expected:
        raise Problem(path, f"{len(values)} values for {expected} {what}")
