"""Progressive columns (Rusu et al. 2016, "Progressive Neural Networks"), MNEMO_STRATEGY=progressive.

Each tag gets a column of its own: its own input standardiser, hidden layers of the configured
sizes and head over the tag's classes. Layer i ≥ 2 of column k also reads layer i−1 of every
earlier column through a lateral connection (a bias-free linear map), so what older tags
learned feeds the new one. When a column is added every older column freezes — parameters and
input statistics — so an old tag's outputs stay bit-identical forever (no forgetting, no
backward transfer). The default column (the MLP's trunk and head) serves absent and unknown
tags and learns from every sample, replay included; it feeds no column, because it never
stops changing.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.nets import GrowableHead, MultiHeadMLP, Standardizer


class Column(nn.Module):
    def __init__(self, input_dim: int, hidden: tuple[int, ...],
                 earlier: list[tuple[int, ...]]) -> None:
        """`earlier`: the hidden sizes of each earlier column, which this one reads."""
        super().__init__()
        self.hidden = hidden
        self.standardizer = Standardizer(input_dim)
        widths = (input_dim, *hidden)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, hidden, strict=False))
        # laterals[i - 1][j]: column j's layer i-1 activations into this column's layer i.
        self.laterals = nn.ModuleList(
            nn.ModuleList(nn.Linear(sizes[i - 1], hidden[i], bias=False) for sizes in earlier)
            for i in range(1, len(hidden)))
        # Zero at first: a new column starts as a fresh one and learns how much to read from
        # the old ones (random laterals only added noise on split digits).
        for group in self.laterals:
            for lateral in group:
                nn.init.zeros_(lateral.weight)

    def activations(self, x: Tensor, earlier: list[list[Tensor]]) -> list[Tensor]:
        """This column's hidden activations, given every earlier column's."""
        out: list[Tensor] = []
        a = self.standardizer(x)
        for i, layer in enumerate(self.layers):
            z = layer(a)
            if i > 0:
                for lateral, acts in zip(self.laterals[i - 1], earlier, strict=True):
                    z = z + lateral(acts[i - 1])
            a = z.relu()
            out.append(a)
        return out


class ProgressiveMLP(MultiHeadMLP):
    PROGRESSIVE = True

    def _init_tag_modules(self) -> None:
        self.columns = nn.ModuleList()

    def _head_for(self, tag: str) -> GrowableHead:
        if tag not in self._classes:
            for column, head in zip(self.columns, self.tag_heads.values(), strict=True):
                column.requires_grad_(False)  # frozen: what the new column reads never moves
                head.requires_grad_(False)
            hidden = self.hidden if not self.columns else self.column_hidden or self.hidden
            self.columns.append(Column(self.input_dim, hidden,
                                       [c.hidden for c in self.columns]).to(self.head.weight))
        return super()._head_for(tag)

    def _new_head_inputs(self) -> int:
        return self.columns[-1].hidden[-1]  # the column made just before its head

    def add_tag_classes(self, tag: str, classes: list[int],
                        generator: torch.Generator | None = None) -> None:
        if tag in self._classes and not self.trainable_tag(tag):
            return  # a frozen column takes no new class: its tag's new labels go to the default
        if tag not in self._classes and generator is not None:
            # The column's initial weights come from the learner's generator, not the global
            # RNG, so a run (and the benchmark) is reproducible.
            seed = int(torch.randint(2**31, (1,), generator=generator))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self._head_for(tag)
        super().add_tag_classes(tag, classes, generator)

    def observe_tags(self, x: Tensor, tags: list[str]) -> None:
        for tag in dict.fromkeys(tags):
            if tag and self.trainable_tag(tag):
                index = list(self._classes).index(tag)
                rows = [i for i, t in enumerate(tags) if t == tag]
                self.columns[index].standardizer.update(x[rows])

    def column_activations(self, x: Tensor, upto: int) -> list[list[Tensor]]:
        acts: list[list[Tensor]] = []
        for column in list(self.columns)[: upto + 1]:
            acts.append(column.activations(x, acts))
        return acts

    def forward_tag(self, x: Tensor, tag: str) -> Tensor:
        index = list(self._classes).index(tag) if tag in self._classes else -1
        if index < 0:
            raise KeyError(tag)
        return self.tag_head(tag)(self.column_activations(x, index)[-1][-1])

    def tag_logits_from(self, h: Tensor, x: Tensor, tag: str) -> Tensor:
        return self.forward_tag(x, tag)  # a column reads the inputs, not the shared trunk

