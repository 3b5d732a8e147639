"""Load records from local json/jsonl/parquet/csv files or folders (or hub names when online) through `datasets`,
and validate rows with the file and row named in the error. One convention for positions in messages: rows and
lines are counted from 1, as an editor shows them ("row 1" is the first record)."""
from __future__ import annotations

import json
from pathlib import Path

from .toy import toy_records

SUFFIX_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


class DataError(ValueError):
    """Bad input data, worded as one line naming the file and row."""


def at_row(source: str, index: int) -> str:
    """'<source>: row N' for the record at 0-based `index` (N counts from 1)."""
    return f"{source}: row {index + 1}"


def looks_local(spec: str) -> bool:
    """A path rather than a hub name ('name' or 'org/name'): absolute, relative with ./ ../ ~, nested deeper than
    org/name, or ending in a file suffix. Used to say 'no such file or directory' instead of a hub error."""
    path = Path(spec)
    return (spec.startswith((".", "~", "/", "\\")) or len(path.parts) > 2 or path.suffix in SUFFIX_BUILDERS
            or path.suffix in (".yaml", ".safetensors", ".bin", ".gguf"))


def missing_path_error(spec: str, key: str = "") -> str:
    return f"{key + ': ' if key else ''}no such file or directory: {spec}"


def _check_json_lines(file: Path) -> None:
    """`datasets` reports a broken JSON line without its number; find it first."""
    with file.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    json.loads(line)
                except json.JSONDecodeError as error:
                    raise DataError(f"{file}: line {number}: invalid JSON ({error.msg})") from None


def _local_files(path: Path) -> list[Path]:
    files = sorted(f for f in path.rglob("*") if f.suffix in SUFFIX_BUILDERS) if path.is_dir() else [path]
    if not files:
        raise DataError(f"{path}: folder holds no .json/.jsonl/.parquet/.csv files")
    suffixes = {SUFFIX_BUILDERS.get(f.suffix) for f in files}
    if None in suffixes:
        raise DataError(f"{path}: unsupported file type (expected .json, .jsonl, .parquet or .csv)")
    if len(suffixes) > 1:
        raise DataError(f"{path}: mixes file types {sorted(suffixes)}; use one type per folder")
    return files


def load_records(spec: str, split: str = "train", key: str = ""):
    """A `datasets.Dataset` from a local file/folder or a hub dataset name; `key` names the config key in errors."""
    import datasets

    datasets.disable_progress_bars()
    path = Path(spec).expanduser()
    if not path.exists() and looks_local(spec):
        raise DataError(missing_path_error(spec, key))
    try:
        if path.exists():
            files = _local_files(path)
            if all(not f.read_bytes().strip() for f in files):
                raise DataError(f"{spec}: dataset is empty (no rows)")
            for file in files:
                if file.suffix == ".jsonl":
                    _check_json_lines(file)
            builder = SUFFIX_BUILDERS[files[0].suffix]
            dataset = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train")
        else:
            dataset = datasets.load_dataset(spec, split=split)
    except DataError:
        raise
    except Exception as error:  # datasets raises many types; keep the first line, name the source
        raise DataError(f"{spec}: cannot load ({type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]})") from None
    if len(dataset) == 0:
        raise DataError(f"{spec}: dataset is empty (no rows)")
    return dataset


def require_text(row: dict, key: str, source: str, index: int) -> str:
    """The non-empty string under `key` in a row, or a DataError naming source, row and key."""
    value = row.get(key)
    if value is None:  # `datasets` fills a key that some rows lack with null
        present = ", ".join(sorted(k for k, v in row.items() if v is not None)) or "nothing"
        raise DataError(f"{at_row(source, index)}: missing key {key!r} (row has: {present})")
    if not isinstance(value, str):
        raise DataError(f"{at_row(source, index)}: {key!r} should be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{at_row(source, index)}: {key!r} is empty")
    return value


def load_rows(spec: str, kind: str, split: str = "train", key: str = "") -> list[dict]:
    """Rows of a file, folder, hub dataset or bundled 'toy:<task>'; `key` names the config key in errors."""
    if spec.startswith("toy:"):
        try:
            return toy_records(spec[4:], kind)
        except ValueError as error:
            raise DataError(f"{key + ': ' if key else ''}{spec}: {error}") from None
    return list(load_records(spec, split, key))
