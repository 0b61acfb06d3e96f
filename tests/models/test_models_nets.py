import numpy as np
import pytest
import torch

from models.nets import MLP, MLPConfig, Standardizer, build_model


def test_config_round_trips_through_json_shape() -> None:
    c = MLPConfig(input_dim=5, hidden=(7, 3), num_classes=4)
    d = c.to_dict()
    assert d == {"input_dim": 5, "hidden": [7, 3], "num_classes": 4}
    assert MLPConfig.from_dict(d) == c
    with pytest.raises(ValueError, match="unknown"):
        MLPConfig.from_dict({**d, "depth": 3})
    with pytest.raises(ValueError):
        MLPConfig(input_dim=0)


def test_standardizer_is_identity_before_any_update() -> None:
    s = Standardizer(4)
    x = torch.randn(6, 4) * 100
    assert torch.equal(s(x), x)


def test_standardizer_matches_numpy_over_batched_updates() -> None:
    rng = np.random.default_rng(0)
    s = Standardizer(3, clip=None)
    seen = []
    for n in (1, 5, 17, 2, 40):
        xb = rng.normal(loc=[3.0, -50.0, 100.0], scale=[1.0, 10.0, 0.5], size=(n, 3))
        seen.append(xb)
        s.update(torch.from_numpy(xb).float())
        # Inputs are float32 on the way in, so compare against numpy on the same values.
        all_x = np.concatenate(seen).astype(np.float32).astype(np.float64)
        assert s.count.item() == len(all_x)
        np.testing.assert_allclose(s.mean.numpy(), all_x.mean(0), rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(s.var.numpy(), all_x.var(0), rtol=1e-9, atol=1e-12)
    z = s(torch.from_numpy(all_x).float()).double().numpy()
    expected = (all_x - all_x.mean(0)) / np.sqrt(all_x.var(0) + s.eps)
    np.testing.assert_allclose(z, expected, rtol=1e-4, atol=1e-4)


def test_standardizer_clips_outliers_of_nearly_constant_features() -> None:
    s = Standardizer(2, clip=10.0)
    s.update(torch.tensor([[0.0, 1.0], [0.0, 3.0]]))
    z = s(torch.tensor([[16.0, 2.0]]))
    assert z[0, 0].item() == 10.0  # a constant-so-far feature cannot explode
    assert z[0, 1].item() == pytest.approx(0.0)


def test_standardizer_state_dict_restores_derived_buffers() -> None:
    a = Standardizer(3)
    a.update(torch.randn(20, 3) * 5 + 2)
    b = Standardizer(3)
    b.load_state_dict(a.state_dict())
    assert set(a.state_dict()) == {"count", "mean", "m2"}
    x = torch.randn(4, 3)
    assert torch.equal(a(x), b(x))


def test_zero_class_model_returns_empty_logits() -> None:
    m = build_model(MLPConfig(4, (8,), 0), seed=0)
    assert m(torch.randn(3, 4)).shape == (3, 0)
    assert m.config.num_classes == 0


def test_build_model_is_deterministic_per_seed_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = build_model(MLPConfig(4, (8,), 3), seed=7)
    assert torch.equal(torch.rand(1), expected_next)
    b = build_model(MLPConfig(4, (8,), 3), seed=7)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize("frozen", [False, True])
@pytest.mark.parametrize("batch", [1, 2, 16, 64])
def test_grow_head_keeps_old_logits_bit_identical(batch: int, frozen: bool) -> None:
    # Plain nn.Linear fails this with MKL (e.g. 1 -> 2 rows, or 3 -> 4 at batch size 1).
    m: MLP = build_model(MLPConfig(64, (128, 128), 1), seed=1).requires_grad_(not frozen)
    m.standardizer.update(torch.randn(30, 64) * 3)
    x = torch.randn(batch, 64)
    g = torch.Generator().manual_seed(0)
    for new_n in [*range(2, 18), 63, 64, 65, 129, 200]:
        before = m(x).detach()
        old_bias = m.head.bias.detach().clone()
        m.grow_head(new_n, g)
        after = m(x).detach()
        assert after.shape == (batch, new_n)
        assert torch.equal(after[:, : before.shape[1]], before), new_n
        assert torch.equal(m.head.bias[: len(old_bias)], old_bias)
        # New classes start at the lowest old bias, so they do not take over predictions.
        assert torch.all(m.head.bias[len(old_bias) :] == old_bias.min())
    assert m.config == MLPConfig(64, (128, 128), 200)
    with pytest.raises(ValueError, match="shrink"):
        m.grow_head(10)


def test_frozen_head_notices_loaded_weights() -> None:
    a = build_model(MLPConfig(5, (8,), 3), seed=0).requires_grad_(False)
    b = build_model(MLPConfig(5, (8,), 3), seed=1)
    x = torch.randn(4, 5)
    assert not torch.equal(a(x), b(x))  # also fills a's cached padded head
    a.load_state_dict(b.state_dict())
    assert torch.equal(a(x), b(x).detach())


def test_standardizer_update_is_bit_identical_to_the_tensor_formula() -> None:
    """update() counts with Python floats and reuses its temporaries; the statistics must stay
    those of the Chan merge written with 0-dim float64 tensors (the earlier code), bit for bit."""
    g = torch.Generator().manual_seed(3)
    s = Standardizer(7)
    count = torch.zeros((), dtype=torch.float64)
    mean = torch.zeros(7, dtype=torch.float64)
    m2 = torch.zeros(7, dtype=torch.float64)
    for i in range(200):
        x = torch.randn(25 + i % 9, 7, generator=g) * (1 + i % 4) + 0.01 * i
        s.update(x)
        xb = x.to(torch.float64)
        n_b = xb.shape[0]
        mean_b = xb.mean(0)
        m2_b = (xb - mean_b).square_().sum(0)
        n_a = count.clone()
        n = n_a + n_b
        delta = mean_b - mean
        mean.add_(delta * (n_b / n))
        m2.add_(m2_b + delta.square() * (n_a * n_b / n))
        count.add_(n_b)
    assert torch.equal(s.count, count) and torch.equal(s.mean, mean) and torch.equal(s.m2, m2)
    assert torch.equal(s.scale, (m2 / count + s.eps).rsqrt().float())
    assert torch.equal(s.shift, mean.float())
