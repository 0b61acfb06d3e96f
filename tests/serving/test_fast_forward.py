"""The serving fast path gives exactly the module's logits, and steps aside where it cannot."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.checkpoint import model_to_bytes
from models.nets import MLPConfig, build_model
from service.serving import fast_forward
from service.serving.fast_forward import checked_forward, plain_forward
from service.serving.holder import PROBE_ROWS, load_served


def _served_module(classes: int, grow_to: int | None = None, dim: int = 6) -> torch.nn.Module:
    """A trained-looking plain MLP as the API gets it: fitted standardiser, frozen, eval."""
    model = build_model(MLPConfig(input_dim=dim, hidden=(16, 12), num_classes=classes), seed=3)
    gen = torch.Generator().manual_seed(5)
    model.standardizer.update(torch.randn(200, dim, generator=gen) * 4 + 2)
    if grow_to is not None:
        model.grow_head(grow_to, gen)
    return model.requires_grad_(False).eval()


@pytest.mark.parametrize(("classes", "grow_to"), [(3, None), (64, None), (65, None),
                                                  (10, 130), (0, None)])
@pytest.mark.parametrize("rows", [1, 7, 100])
def test_the_fast_path_is_bit_identical_to_the_module(classes: int, grow_to: int | None,
                                                      rows: int) -> None:
    module = _served_module(classes, grow_to)
    fast = plain_forward(module)
    assert fast is not None
    # Outliers too: the standardiser clips them, and both paths must clip alike.
    x = torch.from_numpy(np.random.default_rng(rows).normal(0, 30, size=(rows, 6))
                         .astype(np.float32))
    with torch.inference_mode():
        expected, got = module(x), fast(x)
    assert got.shape == (rows, grow_to or classes)
    assert torch.equal(got, expected)


def test_load_served_uses_it_and_answers_as_the_module_would() -> None:
    module = _served_module(4)
    labels = ["a", "b", "c", "d"]
    served = load_served(model_to_bytes(module), {"version": 2, "labels": labels}, epoch=1)
    assert served.fast is not None
    x = np.random.default_rng(1).normal(size=(5, 6)).astype(np.float32)
    with torch.inference_mode():
        expected = torch.softmax(served.module(torch.from_numpy(x)), dim=1).numpy()
    assert np.array_equal(served.predict_proba(x), expected)


def test_per_tag_heads_and_hooked_modules_keep_the_module_forward() -> None:
    tagged = build_model(MLPConfig(input_dim=6, hidden=(8,), num_classes=2,
                                   tag_heads=(("t", (0, 1)),)), seed=0)
    assert plain_forward(tagged) is None  # routes by tag: not the plain path
    progressive = build_model(MLPConfig(input_dim=6, hidden=(8,), num_classes=2,
                                        tag_heads=(("t", (0, 1)),), progressive=True), seed=0)
    assert plain_forward(progressive) is None
    hooked = _served_module(3)
    handle = hooked.body[0].register_forward_hook(lambda *_: None)
    try:
        assert plain_forward(hooked) is None  # a hook would be skipped: not the same forward
    finally:
        handle.remove()
    assert plain_forward(hooked) is not None


def test_a_fast_path_that_disagrees_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    module = _served_module(3)
    real = plain_forward(module)
    assert real is not None
    probe = torch.zeros(2, 6)
    assert checked_forward(module, probe) is not None
    monkeypatch.setattr(fast_forward, "plain_forward",
                        lambda m: (lambda x: real(x) + 1e-6))
    assert checked_forward(module, probe) is None


def test_the_next_version_of_the_same_architecture_keeps_the_fast_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    labels = ["a", "b", "c", "d"]
    first = load_served(model_to_bytes(_served_module(4)), {"version": 1, "labels": labels}, 1)
    second_module = _served_module(4)
    with torch.no_grad():
        for p in second_module.parameters():
            p.add_(0.5)  # other weights: the version the learner published next
    # Taken on trust from the version before (the check compares ops, which it shares): no
    # probe comparison runs, and the answers are still exactly the module's.
    monkeypatch.setattr("service.serving.holder.checked_forward",
                        lambda *_: pytest.fail("probed again"))
    second = load_served(model_to_bytes(second_module), {"version": 2, "labels": labels}, 2,
                         previous=first)
    assert second.fast is not None and second.module is not first.module
    x = np.random.default_rng(2).normal(size=(5, 6)).astype(np.float32)
    with torch.inference_mode():
        expected = torch.softmax(second_module(torch.from_numpy(x)), dim=1).numpy()
    assert np.array_equal(second.predict_proba(x), expected)
    assert not np.array_equal(first.predict_proba(x), expected)


def test_a_new_architecture_is_probed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_served(model_to_bytes(_served_module(3)), {"version": 1, "labels": [0, 1, 2]}, 1)
    probed: list[int] = []

    def spy(module: torch.nn.Module, probe: torch.Tensor) -> object:
        probed.append(len(probe))
        return checked_forward(module, probe)

    monkeypatch.setattr("service.serving.holder.checked_forward", spy)
    grown = load_served(model_to_bytes(_served_module(3, grow_to=5)),
                        {"version": 2, "labels": [0, 1, 2, 3, 4]}, 2, previous=first)
    assert probed == [PROBE_ROWS] and grown.fast is not None
