"""Which head (and, with MNEMO_HEADS=soft, which trunk copy) each row of a gradient step trains:
the new rows' tags, and the replayed rows' tags read from the buffer slots they were drawn from.

A row of tag t trains the default head (every row does) and t's head, where t has one that still
learns and its label has a row there. Replayed rows do the same as new ones with per-tag heads and
soft sharing: otherwise replay trained only the shared trunk and the default head, and a tag's
head (or trunk copy) saw each of its samples in its two steps only (BENCHMARKS.md, "Soft
sharing"). Progressive columns are left out: a replayed row of an older tag would reach only its
frozen column, so its replay stays on the newest column and the default head.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from models.nets import MLP, MultiHeadMLP
from models.replay import ReplayBuffer

# (tag, rows of the step's batch, each row's target in the tag's head)
TagRows = tuple[str, Tensor, Tensor]
# Tag groups averaged together: the new rows', then the replayed rows' (each over its own count).
TagPart = tuple[list[TagRows], int]


def replays_by_tag(model: MLP) -> bool:
    """Whether replayed rows train their tags' heads: per-tag heads and soft sharing."""
    return isinstance(model, MultiHeadMLP) and not model.PROGRESSIVE


def tag_rows(model: MLP, tags: Sequence[str] | None, y: Tensor, device: torch.device, *,
             offset: int = 0, strict: bool = True) -> list[TagRows]:
    """(tag, rows + offset, row targets in its head) per tag whose head learns. `strict`: a label
    without a row in its tag's head is an error (new rows: ensure_tags comes first); otherwise
    (replayed rows, whose head may have been purged or folded since) the row keeps to the
    default head."""
    if tags is None or not isinstance(model, MultiHeadMLP):
        return []
    if len(tags) != y.shape[0]:
        raise ValueError(f"expected one tag per row ({y.shape[0]}), got {len(tags)}")
    labels = y.tolist()
    out = []
    for tag in dict.fromkeys(tags):
        classes = model.tag_classes(tag)
        if not tag or classes is None or not model.trainable_tag(tag):
            continue  # no tag, or beyond MNEMO_MAX_TAGS: the default head only
        where = {c: j for j, c in enumerate(classes)}
        rows, local = [], []
        for i, t in enumerate(tags):
            if t != tag:
                continue
            j = where.get(labels[i])
            if j is None:
                if strict:
                    raise ValueError(f"tag {tag!r}: a label has no row in its head; "
                                     "call ensure_tags first")
                continue
            rows.append(i + offset)
            local.append(j)
        if rows:
            out.append((tag, torch.tensor(rows, device=device), torch.tensor(local, device=device)))
    return out


def tag_loss(model: MultiHeadMLP, h: Tensor, x: Tensor, parts: list[TagPart]) -> Tensor:
    """Cross-entropy of each tagged row in its tag's head: per part, summed over its groups and
    divided by the part's row count (new rows weigh as they did before replay had tags; the
    replay sample as a batch of its own, as in rehearsal). h: the trunk's features of x."""
    total = torch.zeros((), device=h.device)
    for groups, count in parts:
        if groups:
            total = total + sum(
                F.cross_entropy(model.tag_logits_from(h[rows], x[rows], tag), local,
                                reduction="sum")
                for tag, rows, local in groups) / count
    return total


def sample_replay(buffer: ReplayBuffer, n: int, generator: torch.Generator,
                  slot_tags: Sequence[str] | None) -> tuple[Tensor, Tensor, list[str] | None]:
    """A replay sample and the tag of each row (None: untagged). Slot buffers draw the slots
    exactly as `sample` does (the same generator draws, so untagged runs do not change); a
    generative buffer has no slots, hence no tags, nor has a mirror whose tags lag its slots."""
    sample_slots = getattr(buffer, "sample_slots", None)
    if slot_tags is None or sample_slots is None or len(slot_tags) != len(buffer):
        x, y = buffer.sample(n, generator)
        return x, y, None
    x, y, idx = sample_slots(n, generator)
    return x, y, [slot_tags[i] for i in idx.tolist()]
