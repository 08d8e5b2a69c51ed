"""Alpaca-format dataset sources: a local JSON/JSONL file (``json``) and the Hugging Face Hub (``hub``).

Both accept records with a string ``instruction`` and ``output`` and an optional string
``input``; other fields are ignored. A local file is read with the standard library
exactly as written (no type inference: ``"8"`` stays a string and only records whose
own fields are not strings are reported), a malformed record is named by its row
number (1-based) and a file that is not valid JSON by line and column. The Hub is read
through the ``datasets`` library (imported lazily).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from harness import hookimpl
from harness.api import REQUIRED, DatasetSource, Option
from harness.errors import DataUnavailable, MissingDependency, UserError

#: what a record may look like, quoted in every error about a malformed record
ALLOWED = (
    "each record needs a string 'instruction' and a string 'output'; 'input' is optional "
    "(a string; missing or null means empty); other fields are ignored"
)
MAX_LISTED_ROWS = 10
FIELDS = ("instruction", "input", "output")


def _import_datasets(purpose: str) -> Any:
    try:
        import datasets
    except ImportError as exc:
        raise MissingDependency("datasets", "default", purpose=purpose) from exc
    return datasets


def _row_problem(row: Any) -> str | None:
    """Why ``row`` is not a valid Alpaca record, or None if it is."""
    if not isinstance(row, dict):
        return f"not an object but {type(row).__name__}"
    problems = []
    for key in FIELDS:
        value = row.get(key)
        if value is None:
            if key != "input":
                problems.append(f"'{key}' is missing")
        elif not isinstance(value, str):
            problems.append(f"'{key}' is {type(value).__name__}, not a string")
    return "; ".join(problems) or None


def validate_records(rows: Iterable[Any], *, where: str) -> list[dict[str, str]]:
    """Alpaca records (``instruction``, ``input``, ``output``) from ``rows``, or one UserError listing the bad rows."""
    rows = list(rows)
    objects = [row for row in rows if isinstance(row, dict)]
    absent = [key for key in ("instruction", "output") if objects and not any(key in row for row in objects)]
    if absent:
        found = ", ".join(f"'{c}'" for c in dict.fromkeys(k for row in objects for k in row)) or "none"
        names = " and ".join(f"'{c}'" for c in absent)
        raise UserError(f"no {names} field in any record (fields found: {found}); {ALLOWED}", file=where)
    records: list[dict[str, str]] = []
    bad: list[tuple[int, str]] = []
    for number, row in enumerate(rows, start=1):
        problem = _row_problem(row)
        if problem is not None:
            bad.append((number, problem))
            continue
        records.append({"instruction": row["instruction"], "input": row.get("input") or "", "output": row["output"]})
    if bad:
        listed = ", ".join(f"row {n} ({why})" for n, why in bad[:MAX_LISTED_ROWS])
        more = f" and {len(bad) - MAX_LISTED_ROWS} more" if len(bad) > MAX_LISTED_ROWS else ""
        noun = "record" if len(bad) == 1 else "records"
        raise UserError(f"{len(bad)} malformed {noun}: {listed}{more}; {ALLOWED}", file=where)
    if not records:
        raise UserError(f"no records; {ALLOWED}", file=where)
    return records


def _records_from_dataset(ds: Any, *, where: str) -> list[dict[str, str]]:
    """Validated records of a ``datasets.Dataset``, reading only the Alpaca columns."""
    columns = list(ds.column_names)
    missing = [c for c in ("instruction", "output") if c not in columns]
    if missing:
        found = ", ".join(f"'{c}'" for c in columns) or "none"
        names = " and ".join(f"'{c}'" for c in missing)
        raise UserError(f"no {names} field in any record (fields found: {found}); {ALLOWED}", file=where)
    return validate_records(ds.select_columns([c for c in FIELDS if c in columns]).to_list(), where=where)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class JsonSource(DatasetSource):
    """Alpaca records from a local JSON file (a list of objects) or JSON Lines file."""

    name = "json"
    version = "1"
    description = "Alpaca records from a local JSON (list of objects) or JSONL file."
    options = {
        "path": Option(
            Path,
            help="the JSON or JSONL file; a relative path is resolved against the registry's folder",
        ),
    }

    def _raw_path(self) -> str:
        raw = self.settings.get("path", REQUIRED)
        if raw is REQUIRED or not isinstance(raw, str) or not raw:
            raise UserError("a path to a JSON or JSONL file is required", key="dataset.path")
        return raw

    def resolve(self, base_dir: Path) -> Path:
        """The data file, checked to exist; relative paths resolve against ``base_dir``."""
        raw = self._raw_path()
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = Path(base_dir) / path
        if not path.exists():
            raise DataUnavailable(f"file not found: {path}", file=raw, key="dataset.path")
        if not path.is_file():
            raise DataUnavailable(f"not a file: {path}", file=raw, key="dataset.path")
        return path

    def fingerprint(self, base_dir: Path) -> dict[str, Any]:
        path = self.resolve(base_dir)
        return {"source": self.name, "path": self._raw_path(), "sha256": _sha256(path)}

    def load(self, base_dir: Path) -> list[dict[str, str]]:
        path = self.resolve(base_dir)
        return validate_records(read_json_records(path), where=str(path))


def read_json_records(path: Path) -> list[Any]:
    """The records of a JSON file (a list of objects, or one object) or a JSON Lines file, as written.

    A file whose first character is ``[`` or ``{`` is read as one JSON document first; if
    that fails and it does not look like JSON Lines either, the error gives the line and
    column where parsing stopped. JSON Lines errors list the lines that are not valid JSON
    with their column.
    """
    where = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataUnavailable(f"cannot read the file: {exc.strerror or exc}", file=where) from exc
    if not data.strip():
        raise UserError(f"the file is empty; {ALLOWED}", file=where)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"not UTF-8 text (byte {exc.start}); save the file as UTF-8", file=where) from None
    stripped = text.lstrip()
    whole_error: json.JSONDecodeError | None = None
    if stripped.startswith(("[", "{")):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            whole_error = exc
        else:
            if isinstance(doc, dict):
                return [doc]  # a file holding a single record
            if isinstance(doc, list):
                return doc
            raise UserError(f"the file holds a JSON {type(doc).__name__}; expected a list of records or one record per line", file=where)
    rows: list[Any] = []
    bad: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            bad.append(f"line {lineno} column {exc.colno} ({exc.msg})")
    # a JSON list, or one object over several lines, that failed to parse: say where it broke
    first_line_ok = bool(rows) and not (bad and bad[0].startswith(f"line {_first_line(text)} "))
    if whole_error is not None and (stripped.startswith("[") or not first_line_ok):
        e = whole_error
        raise UserError(f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}; {ALLOWED}", file=where) from None
    if bad:
        listed = ", ".join(bad[:MAX_LISTED_ROWS])
        more = f" and {len(bad) - MAX_LISTED_ROWS} more" if len(bad) > MAX_LISTED_ROWS else ""
        raise UserError(f"neither a JSON list nor JSON Lines: {listed}{more} not valid JSON; {ALLOWED}", file=where)
    return rows


def _first_line(text: str) -> int:
    """The number of the first non-blank line of ``text``."""
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            return lineno
    return 1


#: exception class names (anywhere in the cause chain) that mean the Hub could not be reached
_OFFLINE_NAMES = frozenset(
    {
        "ConnectionError",
        "ConnectError",
        "ConnectTimeout",
        "ReadTimeout",
        "Timeout",
        "TimeoutException",
        "MaxRetryError",
        "NewConnectionError",
        "NameResolutionError",
        "LocalEntryNotFoundError",
        "OfflineModeIsEnabled",
    }
)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 20:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _is_offline(exc: BaseException) -> bool:
    return any(
        isinstance(e, (ConnectionError, TimeoutError)) or type(e).__name__ in _OFFLINE_NAMES for e in _chain(exc)
    )


def _has_type(exc: BaseException, names: Sequence[str]) -> bool:
    return any(type(e).__name__ in names for e in _chain(exc))


#: seconds the reachability probe waits for the Hub
PROBE_TIMEOUT = 5.0
_TRUE = ("1", "true", "yes", "on")


def _hub_unreachable() -> str | None:
    """Why the Hub cannot be reached (a TCP connection to its endpoint, at most :data:`PROBE_TIMEOUT` s), or None.

    Asked first because ``huggingface_hub`` retries an unreachable Hub five times with growing
    waits (23-34 s measured) before it gives up. Not asked in offline mode (``HF_HUB_OFFLINE``,
    ``HF_DATASETS_OFFLINE``: the cache is read) or behind a proxy (the proxy decides what is
    reachable; the libraries' own errors then say what failed).
    """
    import os
    import socket
    import threading
    from urllib.parse import urlsplit

    if any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return None
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy")):
        return None
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    port = parts.port or (80 if parts.scheme == "http" else 443)
    outcome: list[str | None] = []

    def connect() -> None:  # in a thread: a name lookup is not bound by the socket's timeout
        try:
            socket.create_connection((host, port), timeout=PROBE_TIMEOUT).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(exc.strerror or type(exc).__name__)

    thread = threading.Thread(target=connect, name="hub-probe", daemon=True)
    thread.start()
    thread.join(PROBE_TIMEOUT + 1)
    if not outcome:
        return f"{endpoint}: no answer within {PROBE_TIMEOUT:g} s"
    return f"{endpoint}: {outcome[0]}" if outcome[0] else None


class HubSource(DatasetSource):
    """Alpaca records from a data set on the Hugging Face Hub (default: ``tatsu-lab/alpaca``)."""

    name = "hub"
    version = "1"
    description = "Alpaca records from a Hugging Face Hub data set (default tatsu-lab/alpaca); needs the network once."
    options = {
        "name": Option(str, default="tatsu-lab/alpaca", help="the data set's name on the Hugging Face Hub"),
        "revision": Option(str, default="main", help="a branch, tag or commit of the data set repository"),
        "split": Option(str, default="train", help="which split to read"),
    }

    def _setting(self, key: str) -> str:
        return str(self.settings[key])

    def fingerprint(self, base_dir: Path) -> dict[str, Any]:
        return {
            "source": self.name,
            "name": self._setting("name"),
            "revision": self._setting("revision"),
            "split": self._setting("split"),
        }

    def load(self, base_dir: Path) -> list[dict[str, str]]:
        name, revision, split = self._setting("name"), self._setting("revision"), self._setting("split")
        unreachable = _hub_unreachable()  # before importing datasets (seconds): an offline check stays quick
        if unreachable:
            raise DataUnavailable(
                f"the Hugging Face Hub is unreachable ({unreachable}), so '{name}' cannot be downloaded; connect to the network, "
                'or use a local file: source = "json" with path = "your_data.json" (or, if the data set is in your Hugging Face '
                "cache already, set HF_HUB_OFFLINE=1 to read it from there)",
                key="dataset.source",
            )
        datasets = _import_datasets("downloading a data set from the Hugging Face Hub")
        try:
            ds = datasets.load_dataset(name, revision=revision, split=split)
        except Exception as exc:
            if _has_type(exc, ("DatasetNotFoundError",)):
                raise DataUnavailable(
                    f"data set '{name}' was not found on the Hugging Face Hub (or it is private or gated "
                    "and no token is set)",
                    key="dataset.name",
                ) from exc
            if _has_type(exc, ("RevisionNotFoundError",)):
                raise UserError(f"revision '{revision}' of '{name}' does not exist", key="dataset.revision") from exc
            if isinstance(exc, ValueError) and "Unknown split" in str(exc):
                raise UserError(f"'{name}' has no split '{split}' ({exc})", key="dataset.split") from exc
            if _is_offline(exc):
                raise DataUnavailable(
                    f"the Hugging Face Hub is unreachable, so '{name}' cannot be downloaded "
                    f"({type(exc).__name__}: {exc}); connect to the network, or use a local file: "
                    'source = "json" with path = "your_data.json"',
                    key="dataset.source",
                ) from exc
            raise
        return _records_from_dataset(ds, where=f"hub:{name}@{revision}[{split}]")


@hookimpl
def harness_register_datasets(register: Callable[[type], None]) -> None:
    register(JsonSource)
    register(HubSource)
