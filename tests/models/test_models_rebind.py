"""A new version bound to a copy of the served one's module is the module a rebuild gives."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from models import checkpoint
from models.checkpoint import model_from_bytes, model_to_bytes, tensors_from_bytes
from models.nets import MLP, MLPConfig, MultiHeadMLP, build_model
from models.rebind import rebind

TAGS = (("a", (0, 2)), ("b", (1, 2, 3)))


def _trained(config: MLPConfig, seed: int) -> MLP:
    """A version as the learner publishes it: its own weights, a fitted standardiser."""
    model = build_model(config, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    model.standardizer.update(torch.randn(50, config.input_dim, generator=gen) * 3 + seed)
    return model


CONFIGS: dict[str, Callable[[], MLPConfig]] = {
    "plain": lambda: MLPConfig(6, (8, 5), 4),
    "grown head": lambda: MLPConfig(6, (8, 5), 70),
    "per-tag heads": lambda: MLPConfig(6, (8,), 4, TAGS),
    "progressive": lambda: MLPConfig(6, (8,), 4, TAGS, progressive=True, column_hidden=(4,)),
}


@pytest.mark.parametrize("kind", CONFIGS)
def test_a_rebound_version_is_the_module_a_rebuild_gives(kind: str) -> None:
    config = CONFIGS[kind]()
    served, _ = model_from_bytes(model_to_bytes(_trained(config, 1)))
    blob = model_to_bytes(_trained(config, 2))
    x = torch.randn(7, 6) * 20  # outliers too: both clip alike
    with torch.inference_mode():
        served_before = served(x)
    rebound, _ = model_from_bytes(blob, served)
    rebuilt, _ = model_from_bytes(blob)

    assert type(rebound) is type(rebuilt) and rebound.config == rebuilt.config
    assert not rebound.training and not any(p.requires_grad for p in rebound.parameters())
    # Every tensor, the recomputed non-persistent buffers (standardiser) included.
    assert list(rebound.state_dict()) == list(rebuilt.state_dict())
    for (name, mine), (_, theirs) in zip(rebound.named_buffers(), rebuilt.named_buffers(),
                                         strict=True):
        assert torch.equal(mine, theirs), name
    assert all(torch.equal(a, b) for a, b in zip(rebound.state_dict().values(),
                                                 rebuilt.state_dict().values(), strict=True))
    with torch.inference_mode():
        assert torch.equal(rebound(x), rebuilt(x))
        assert not torch.equal(rebound(x), served_before)  # the new version's answers
        if isinstance(rebound, MultiHeadMLP):
            for tag, _classes in TAGS:
                assert torch.equal(rebound.forward_tag(x, tag), rebuilt.forward_tag(x, tag))
        # The served version is untouched, and shares no storage with its successor.
        assert torch.equal(served(x), served_before)
    theirs = {t.data_ptr() for t in [*served.parameters(), *served.buffers()]}
    assert not theirs & {t.data_ptr() for t in [*rebound.parameters(), *rebound.buffers()]}
    for old, new in zip(served.modules(), rebound.modules(), strict=True):
        assert new is not old and new._forward_hooks is not old._forward_hooks


def test_the_same_architecture_builds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    config = CONFIGS["plain"]()
    served, _ = model_from_bytes(model_to_bytes(_trained(config, 1)))

    def no_build(_config: MLPConfig, seed: int | None = None) -> MLP:
        raise AssertionError("built a module")

    monkeypatch.setattr(checkpoint, "build_model", no_build)
    rebound, _ = model_from_bytes(model_to_bytes(_trained(config, 2)), served)
    assert isinstance(rebound, MLP)
    with pytest.raises(AssertionError, match="built a module"):  # another architecture builds
        model_from_bytes(model_to_bytes(_trained(MLPConfig(6, (8, 5), 5), 2)), served)


def test_another_architecture_is_rebuilt_from_its_blob() -> None:
    served, _ = model_from_bytes(model_to_bytes(_trained(CONFIGS["plain"](), 1)))
    grown = _trained(CONFIGS["plain"](), 2)
    grown.grow_head(6)  # a new class since: a head of another shape
    loaded, _ = model_from_bytes(model_to_bytes(grown), served)
    x = torch.randn(5, 6)
    with torch.inference_mode():
        assert loaded.num_classes == 6 and torch.equal(loaded(x), grown.eval()(x))


def _tensors(seed: int) -> tuple[MLP, dict[str, torch.Tensor]]:
    served, _ = model_from_bytes(model_to_bytes(_trained(CONFIGS["plain"](), 1)))
    tensors, _ = tensors_from_bytes(model_to_bytes(_trained(CONFIGS["plain"](), seed)))
    return served, tensors


@pytest.mark.parametrize("change", ["missing", "extra", "shape", "dtype"])
def test_tensors_that_do_not_fit_the_template_are_refused(change: str) -> None:
    served, tensors = _tensors(2)
    if change == "missing":
        del tensors["body.0.bias"]
    elif change == "extra":
        tensors["body.9.weight"] = torch.zeros(2)
    elif change == "shape":
        tensors["body.0.bias"] = torch.zeros(9)
    else:
        tensors["body.0.bias"] = tensors["body.0.bias"].double()
    assert rebind(served, tensors) is None


def test_a_template_with_hooks_or_its_own_loading_is_refused() -> None:
    served, tensors = _tensors(2)
    handle = served.body[0].register_forward_hook(lambda *_: None)
    assert rebind(served, tensors) is None  # the copy would carry a hook a rebuild has not
    handle.remove()
    assert rebind(served, tensors) is not None

    class OwnLoading(nn.Linear):
        def _load_from_state_dict(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super()._load_from_state_dict(*args, **kwargs)

    served.body[0].__class__ = OwnLoading
    assert rebind(served, tensors) is None
