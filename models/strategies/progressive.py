"""MNEMO_STRATEGY=progressive: the strategy half of progressive columns (models/progressive.py).

It adds no penalty — old columns are protected by being frozen, which the column network does
itself when it adds a column (so a restored network is frozen the same way) — hence naive's
hooks; the name is what selects the column network (MLPConfig.progressive)."""

from __future__ import annotations

from models.strategies.naive import Naive


class Progressive(Naive):
    name = "progressive"
