"""Per-tag heads and progressive columns at predict time (MNEMO_HEADS=per-tag,
MNEMO_STRATEGY=progressive; docs/DESIGN.md §3): a known tag answers from its own head or column over
its own classes; an absent or unknown tag, or the shared mode, from the default head over every
class."""

from __future__ import annotations

import numpy as np
import torch

from models.nets import MultiHeadMLP
from service.serving.holder import ServedModel


def predict_for_tag(served: ServedModel, x: np.ndarray, tag: str | None,
                    routes_by_tag: bool) -> tuple[np.ndarray, list[str | int], np.ndarray]:
    """Probabilities, the labels they are over, and those labels' global class indices."""
    module = served.module
    classes = (module.tag_classes(tag)
               if routes_by_tag and isinstance(module, MultiHeadMLP) else None)
    if not classes:
        return served.predict_proba(x), served.labels, np.arange(len(served.labels))
    with torch.inference_mode():
        logits = module.forward_tag(torch.from_numpy(x), tag)  # type: ignore[arg-type]
        probabilities = torch.softmax(logits, dim=1).numpy()
    return probabilities, [served.labels[c] for c in classes], np.asarray(classes)
