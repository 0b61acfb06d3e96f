"""The concept-drift response retires exactly the buffered samples the new concept
contradicts, and only where the recent data lies (other domains stay protected)."""

from __future__ import annotations

import torch

from models.adaptation import contradicted, new_concept_model, respond_to_drift
from models.nets import MLPConfig, build_model


def region(centre: float, n: int, flip: bool, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes split by the sign of the first feature, around `centre` on the second."""
    x = torch.randn(n, 4, generator=gen)
    x[:, 1] += centre
    y = (x[:, 0] > 0).long()
    return x, (1 - y) if flip else y


def trained_model(x: torch.Tensor, y: torch.Tensor) -> torch.nn.Module:
    model = build_model(MLPConfig(4, (32,), 2), seed=0)
    model.standardizer.update(x)
    return new_concept_model(model, x, y, steps=200)


def test_swapped_region_is_retired_and_the_unchanged_domain_kept() -> None:
    gen = torch.Generator().manual_seed(0)
    old_a, old_b = region(6.0, 200, False, gen), region(-6.0, 200, False, gen)
    model = trained_model(torch.cat([old_a[0], old_b[0]]), torch.cat([old_a[1], old_b[1]]))
    # The buffer holds both domains under the old concept; domain A's labels then swap.
    buffer_x, buffer_y = torch.cat([old_a[0][:100], old_b[0][:100]]), torch.cat(
        [old_a[1][:100], old_b[1][:100]])
    recent_x, recent_y = region(6.0, 150, True, gen)
    response = respond_to_drift(model, buffer_x, buffer_y, recent_x, recent_y)
    in_a, in_b = response.retire[:100], response.retire[100:]
    # Only confident contradictions go (CONFIDENCE): most of the swapped region, not all.
    assert in_a.float().mean() >= 0.5, f"only {int(in_a.sum())}/100 contradicted samples retired"
    assert int(in_b.sum()) <= 5, "the unchanged domain must stay protected (bar outliers)"
    assert response.seconds > 0


def test_nothing_is_retired_without_a_contradiction() -> None:
    gen = torch.Generator().manual_seed(1)
    x, y = region(0.0, 300, False, gen)
    model = trained_model(x, y)
    recent_x, recent_y = region(0.0, 100, False, gen)
    new = new_concept_model(model, recent_x, recent_y)
    mask = contradicted(new, x[:150], y[:150], recent_x, recent_y)
    assert int(mask.sum()) <= 8  # at most a few boundary points (≤ 5%)


def test_the_live_model_is_untouched() -> None:
    gen = torch.Generator().manual_seed(2)
    x, y = region(0.0, 100, False, gen)
    model = trained_model(x, y)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    respond_to_drift(model, x, y, *region(0.0, 50, True, gen))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
