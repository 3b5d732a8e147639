"""The tamper dataset on disk: a `datasets.DatasetDict` (train / validation / test, split by problem so that no
problem's code is seen in training and evaluation both) and `summary.json` (what was made and what was skipped),
written to a temporary folder and renamed into place, so a folder with a summary is complete."""
from __future__ import annotations

import json
import os
import random
import shutil
from collections import Counter
from pathlib import Path

from rlhf.seeding import derive_seed

from .tamper import Tamper

SPLITS = ("train", "validation", "test")
FIELDS = tuple(Tamper.__dataclass_fields__)


class TamperDataError(ValueError):
    """A tamper folder that is missing, incomplete or not made by `rlhf critic tamper`, worded as one line."""


def split_by_problem(task_ids: list[str], validation_fraction: float, test_fraction: float, seed: int) -> dict:
    """task id -> split; seeded; each held-out split gets at least one problem when its fraction is above 0."""
    ids = sorted(set(task_ids))
    random.Random(derive_seed(seed, "tamper_split")).shuffle(ids)
    n_test = max(1, round(len(ids) * test_fraction)) if test_fraction > 0 else 0
    n_val = max(1, round(len(ids) * validation_fraction)) if validation_fraction > 0 else 0
    return {task: ("test" if i < n_test else "validation" if i < n_test + n_val else "train")
            for i, task in enumerate(ids)}


def save_tampers(tampers: list[Tamper], counts: Counter, folder: Path, validation_fraction: float,
                 test_fraction: float, seed: int) -> dict:
    """Write the dataset and summary to `folder` (atomically); returns the summary."""
    from datasets import Dataset, DatasetDict, disable_progress_bars

    disable_progress_bars()

    split_of = split_by_problem([t.task_id for t in tampers], validation_fraction, test_fraction, seed)
    rows = {split: [t.to_record() for t in tampers if split_of[t.task_id] == split] for split in SPLITS}
    dataset = DatasetDict({split: Dataset.from_list(rows[split]) if rows[split] else
                           Dataset.from_dict({name: [] for name in FIELDS}) for split in SPLITS})
    summary = {"counts": dict(counts), "splits": {split: len(rows[split]) for split in SPLITS},
               "problems": {split: sorted({r["task_id"] for r in rows[split]}) for split in SPLITS},
               "operators": dict(Counter(t.operator for t in tampers))}
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    dataset.save_to_disk(str(tmp / "dataset"))
    (tmp / "summary.json").write_text(json.dumps(summary, indent=1))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return summary


def load_tampers(folder: Path):
    """The DatasetDict `save_tampers` wrote, checked for its splits and fields."""
    from datasets import load_from_disk

    folder = Path(folder)
    if not (folder / "summary.json").exists():
        raise TamperDataError(f"{folder}: no complete tamper dataset (run `rlhf critic tamper` first)")
    dataset = load_from_disk(str(folder / "dataset"))
    for split in SPLITS:
        if split not in dataset:
            raise TamperDataError(f"{folder}: split {split!r} is missing")
        missing = [f for f in FIELDS if f not in dataset[split].column_names]
        if missing:
            raise TamperDataError(f"{folder}: split {split!r} lacks field(s) {', '.join(missing)}")
    return dataset
