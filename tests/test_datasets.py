"""The built-in dataset sources: the synthetic generator and its shipped file, JSON/JSONL files, the Hub."""

from __future__ import annotations

import hashlib
import json
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from harness.api import DatasetSource
from harness.errors import UserError
from harness.plugins import build_plugins
from harness_datasets import alpaca, synthetic, synthetic_tasks
from harness_datasets.alpaca import HubSource, JsonSource
from harness_datasets.synthetic import SyntheticSource
from harness_datasets.synthetic_tasks import FAMILIES, generate_labelled, generate_records, to_jsonl


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the ``datasets`` cache of every test inside its tmp_path."""
    try:
        import datasets
    except ImportError:
        return
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets-cache"))


# --------------------------------------------------------------------------- generator


def test_generator_is_deterministic() -> None:
    assert generate_records(80, seed=7) == generate_records(80, seed=7)
    assert generate_records(80, seed=7) != generate_records(80, seed=8)
    assert generate_records() == generate_records(600, seed=20261127)


def test_smaller_n_is_a_prefix() -> None:
    assert generate_records(20) == generate_records()[:20]


def test_default_records_are_unique_strings_and_short() -> None:
    records = generate_records()
    assert len(records) == 600
    assert len({json.dumps(r, sort_keys=True) for r in records}) == 600
    for r in records:
        assert list(r) == ["instruction", "input", "output"]
        assert all(isinstance(v, str) for v in r.values())
        assert r["instruction"].strip() and r["output"].strip()
        assert 1 <= len(r["output"].split()) <= 12
    with_input = sum(1 for r in records if r["input"])
    assert 0.25 * len(records) < with_input < 0.75 * len(records)


def test_every_family_is_represented_with_and_without_input() -> None:
    assert len(FAMILIES) >= 12
    labelled = generate_labelled()
    for family in FAMILIES:
        inputs = [r["input"] for f, r in labelled if f == family]
        assert len(inputs) >= 20, family
        assert any(inputs) and not all(inputs), family
    # the first round already covers every family
    assert {f for f, _ in generate_labelled(len(FAMILIES))} == set(FAMILIES)


def test_answers_are_correct() -> None:
    for family, r in generate_labelled():
        text, out = r["instruction"] + " " + r["input"], r["output"]
        if family == "sort_numbers":
            numbers = [int(x) for x in out.split(", ")]
            assert numbers == sorted(numbers) and all(str(n) in text for n in numbers)
        elif family == "sort_words":
            words = out.split(", ")
            assert words == sorted(words) and all(w in text for w in words)
        elif family == "reverse_word":
            assert out[::-1] in text
        elif family == "number_commas":
            assert out.replace(",", "") in text and re.fullmatch(r"\d{1,3}(,\d{3})+", out)
        elif family == "uppercase":
            assert out.lower() in text and out == out.upper()
        elif family == "capital":
            assert (m := re.fullmatch(r"The capital of (.+) is (.+)\.", out))
            assert (m.group(1), m.group(2)) in synthetic_tasks.CAPITALS
        elif family == "comparison":
            a, b = (int(x) for x in re.findall(r"-?\d+", text))
            assert out == f"The larger number is {max(a, b)}."
        elif family == "unit_conversion" and "°C" in out:
            c, f = (int(x) for x in re.findall(r"-?\d+", out))
            assert f == c * 9 / 5 + 32


def test_negative_n_is_rejected() -> None:
    with pytest.raises(ValueError):
        generate_records(-1)


def test_shipped_file_matches_the_generator() -> None:
    shipped = resources.files("harness_datasets").joinpath(synthetic_tasks.SHIPPED_FILE).read_bytes()
    assert shipped == to_jsonl(generate_records()).encode("utf-8"), (
        "data/synthetic_alpaca.jsonl drifted from generate_records(); "
        "regenerate it with: python -m harness_datasets.synthetic_tasks"
    )


# --------------------------------------------------------------------------- synthetic source


def test_synthetic_source_loads_the_shipped_records() -> None:
    assert SyntheticSource().load(Path(".")) == generate_records()
    assert SyntheticSource({"n": 20}).load(Path(".")) == generate_records(20)


def test_synthetic_source_fingerprint() -> None:
    shipped = resources.files("harness_datasets").joinpath(synthetic_tasks.SHIPPED_FILE).read_bytes()
    fp = SyntheticSource({"n": 50}).fingerprint(Path("."))
    assert fp == {"source": "synthetic", "sha256": hashlib.sha256(shipped).hexdigest(), "n": 50}
    assert SyntheticSource().fingerprint(Path("."))["n"] == 600


def test_synthetic_source_options() -> None:
    opt = SyntheticSource.options["n"]
    assert opt.type is int and opt.default == 600 and opt.minimum == 20 and opt.maximum == 600
    with pytest.raises(UserError, match="601"):
        SyntheticSource({"n": 601}).load(Path("."))


# --------------------------------------------------------------------------- json source


def _write_json(path: Path, rows: list[Any]) -> Path:
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def _write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


ROWS = [
    {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
    {"instruction": "Translate to French.", "input": "cat", "output": "chat"},
    {"instruction": "Name a colour.", "output": "blue", "extra": 1},  # no input, extra column
]
EXPECTED = [
    {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
    {"instruction": "Translate to French.", "input": "cat", "output": "chat"},
    {"instruction": "Name a colour.", "input": "", "output": "blue"},
]


def test_json_source_loads_a_json_list(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    _write_json(tmp_path / "train.json", ROWS)
    assert JsonSource({"path": "train.json"}).load(tmp_path) == EXPECTED


def test_json_source_loads_jsonl_with_absolute_path(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    path = _write_jsonl(tmp_path / "train.jsonl", ROWS)
    assert JsonSource({"path": str(path)}).load(Path("/nonexistent")) == EXPECTED


def test_json_source_accepts_null_input(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    rows = [{"instruction": "a", "input": None, "output": "b"}, {"instruction": "c", "output": "d"}]
    _write_jsonl(tmp_path / "d.jsonl", rows)
    assert JsonSource({"path": "d.jsonl"}).load(tmp_path) == [
        {"instruction": "a", "input": "", "output": "b"},
        {"instruction": "c", "input": "", "output": "d"},
    ]


def test_json_source_ignores_extra_columns_of_mixed_type(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    rows = [{"instruction": "a", "output": "b", "id": 1}, {"instruction": "c", "output": "d", "id": "x"}]
    _write_jsonl(tmp_path / "d.jsonl", rows)
    assert JsonSource({"path": "d.jsonl"}).load(tmp_path) == [
        {"instruction": "a", "input": "", "output": "b"},
        {"instruction": "c", "input": "", "output": "d"},
    ]


@pytest.mark.parametrize("writer", [_write_json, _write_jsonl])
def test_json_source_names_file_and_row_of_a_bad_record(tmp_path: Path, writer: Any) -> None:
    pytest.importorskip("datasets")
    bad_output = {"instruction": "b", "input": "x", "output": 7}
    no_instruction = {"input": "y", "output": "z"}
    rows = [dict(ROWS[0]), bad_output, dict(ROWS[1]), no_instruction]
    path = writer(tmp_path / ("bad.json" if writer is _write_json else "bad.jsonl"), rows)
    with pytest.raises(UserError) as info:
        JsonSource({"path": path.name}).load(tmp_path)
    message = str(info.value)
    assert path.name in message
    assert "row 2" in message and "row 4" in message
    assert "'instruction'" in message and "'output'" in message


def test_json_source_lists_at_most_ten_bad_rows(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    rows = [{"instruction": "ok", "output": "fine"}] + [{"instruction": f"q{i}", "output": None} for i in range(15)]
    _write_jsonl(tmp_path / "many.jsonl", rows)
    with pytest.raises(UserError) as info:
        JsonSource({"path": "many.jsonl"}).load(tmp_path)
    message = str(info.value)
    assert "15 malformed records" in message and "row 11 " in message and "row 12 " not in message
    assert "and 5 more" in message


def test_json_source_reports_missing_column(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    _write_jsonl(tmp_path / "q.jsonl", [{"question": "a", "answer": "b"}])
    with pytest.raises(UserError, match=r"no 'instruction' and 'output' field.*'question', 'answer'"):
        JsonSource({"path": "q.jsonl"}).load(tmp_path)


def test_json_source_reports_invalid_json_lines(tmp_path: Path) -> None:
    (tmp_path / "broken.jsonl").write_text('{"instruction": "a", "output": "b"}\n{not json\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"broken\.jsonl.*line 2 column 2 .* not valid JSON"):
        JsonSource({"path": "broken.jsonl"}).load(tmp_path)


def test_json_source_reads_strings_as_written_and_names_only_bad_rows(tmp_path: Path) -> None:
    """Issue 13, item 7: "8" stays a string; one record with a number is reported, not 21."""
    rows = [{"instruction": f"What is {i} + {i}?", "input": "", "output": str(2 * i)} for i in range(30)]
    rows[4]["output"] = 8
    rows[17]["input"] = ["x"]
    _write_json(tmp_path / "d.json", rows)
    with pytest.raises(UserError) as info:
        JsonSource({"path": "d.json"}).load(tmp_path)
    message = str(info.value)
    assert "2 malformed records" in message
    assert "row 5 ('output' is int, not a string)" in message and "row 18 ('input' is list, not a string)" in message
    rows[4]["output"], rows[17]["input"] = "8", "12"
    _write_json(tmp_path / "d.json", rows)
    loaded = JsonSource({"path": "d.json"}).load(tmp_path)
    assert loaded[4]["output"] == "8" and loaded[17]["input"] == "12" and len(loaded) == 30


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c", "out', "line 3 column"),  # truncated
        ('[\n  {"instruction": "a", "output": "b"}\n  {"instruction": "c", "output": "d"}\n]\n', "line 3 column 3"),  # no comma
    ],
)
def test_json_source_gives_line_and_column_of_bad_json(tmp_path: Path, text: str, where: str) -> None:
    (tmp_path / "d.json").write_text(text, encoding="utf-8")
    with pytest.raises(UserError) as info:
        JsonSource({"path": "d.json"}).load(tmp_path)
    assert "not valid JSON" in str(info.value) and where in str(info.value) and "d.json" in str(info.value)


def test_json_source_missing_file(tmp_path: Path) -> None:
    source = JsonSource({"path": "missing.json"})
    for call in (source.load, source.fingerprint):
        with pytest.raises(UserError) as info:
            call(tmp_path)
        assert info.value.key == "dataset.path"
        assert "file not found" in info.value.message and "missing.json" in str(info.value)


def test_json_source_fingerprint_follows_content(tmp_path: Path) -> None:
    path = _write_json(tmp_path / "train.json", ROWS)
    source = JsonSource({"path": "train.json"})
    first = source.fingerprint(tmp_path)
    assert first == {"source": "json", "path": "train.json", "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    _write_json(path, ROWS[:2])
    assert source.fingerprint(tmp_path)["sha256"] != first["sha256"]


def test_json_source_needs_no_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_json(tmp_path / "train.json", ROWS)
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    assert JsonSource({"path": "train.json"}).load(tmp_path) == EXPECTED


# --------------------------------------------------------------------------- hub source


def test_hub_source_fingerprint_needs_no_network() -> None:
    assert HubSource().fingerprint(Path(".")) == {
        "source": "hub",
        "name": "tatsu-lab/alpaca",
        "revision": "main",
        "split": "train",
    }
    fp = HubSource({"name": "me/data", "revision": "v1", "split": "test"}).fingerprint(Path("."))
    assert fp == {"source": "hub", "name": "me/data", "revision": "v1", "split": "test"}


def test_hub_source_offline_error(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(alpaca, "_hub_unreachable", lambda: None)  # as if the Hub answered

    def offline(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("Couldn't reach 'tatsu-lab/alpaca' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError) as info:
        HubSource().load(Path("."))
    assert "unreachable" in info.value.message
    assert 'source = "json"' in info.value.message


def test_hub_source_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(alpaca, "_hub_unreachable", lambda: None)  # as if the Hub answered
    from datasets.exceptions import DatasetNotFoundError

    def missing(*args: Any, **kwargs: Any) -> Any:
        raise DatasetNotFoundError("no such data set")

    monkeypatch.setattr(datasets, "load_dataset", missing)
    with pytest.raises(UserError) as info:
        HubSource({"name": "nobody/nothing"}).load(Path("."))
    assert info.value.key == "dataset.name" and "nobody/nothing" in info.value.message


def test_hub_source_reads_alpaca_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(alpaca, "_hub_unreachable", lambda: None)  # as if the Hub answered
    calls: list[tuple[Any, ...]] = []
    rows = [{**r, "input": r.get("input", ""), "text": "rendered"} for r in ROWS]

    def fake(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake)
    assert HubSource({"name": "me/data", "revision": "abc", "split": "train"}).load(Path(".")) == EXPECTED
    assert calls == [(("me/data",), {"revision": "abc", "split": "train"})]


def test_an_unreachable_hub_is_said_at_once_without_the_hub_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17, item 7: the Hub client retried an unreachable Hub for ~23 s; a quick probe answers first."""
    import socket

    from harness.errors import DataUnavailable

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)

    def no_client(purpose: str) -> Any:
        raise AssertionError("the Hub client was reached")

    monkeypatch.setattr(alpaca, "_import_datasets", no_client)
    with pytest.raises(DataUnavailable) as info:
        HubSource().load(Path("."))
    assert info.value.key == "dataset.source" and f"127.0.0.1:{port}" in info.value.message and "HF_HUB_OFFLINE=1" in info.value.message
    # offline mode reads the cache, and behind a proxy the proxy decides: no probe then
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert alpaca._hub_unreachable() is None
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert alpaca._hub_unreachable() is None
    monkeypatch.delenv("HTTPS_PROXY")
    with socket.socket() as listening:  # something answers: reachable
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{listening.getsockname()[1]}")
        assert alpaca._hub_unreachable() is None


# --------------------------------------------------------------------------- registration


def test_modules_register_their_sources() -> None:
    registered: list[type] = []
    synthetic.harness_register_datasets(register=registered.append)
    alpaca.harness_register_datasets(register=registered.append)
    assert registered == [SyntheticSource, JsonSource, HubSource]
    for cls in registered:
        assert issubclass(cls, DatasetSource) and cls.kind == "dataset"
        assert cls.name and cls.description and cls.version == "1"


def test_sources_pass_the_plugin_manager() -> None:
    plugins = build_plugins(entry_points=False, extra=[synthetic, alpaca])
    assert plugins.failures == []
    assert plugins.names("dataset") == ["hub", "json", "synthetic"]
    assert isinstance(plugins.create("dataset", "synthetic", {"n": 30}), SyntheticSource)
