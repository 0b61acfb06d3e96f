"""scikit-learn's bundled digits (8×8 images, 10 classes) as a replayable CSV."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

FEATURES = [f"p{i}" for i in range(64)]
LABEL = "y"


def write_digits_csv(path: Path, *, split: Literal["train", "test", "all"] = "train", seed: int = 0) -> int:
    """Write columns p0..p63 and y ("0".."9"); a fixed stratified 80/20 split. Returns rows."""
    digits = load_digits()
    x, y = digits.data, digits.target
    if split == "all":
        order = np.arange(len(y))
    elif split in ("train", "test"):
        train, test = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=seed)
        order = train if split == "train" else test
    else:
        raise ValueError(f"split must be 'train', 'test' or 'all', not {split!r}")
    with Path(path).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*FEATURES, LABEL])
        for i in order:
            writer.writerow([*(int(v) for v in x[i]), str(y[i])])  # pixels are 0..16
    return len(order)
