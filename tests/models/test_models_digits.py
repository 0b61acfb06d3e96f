"""Learning sanity on scikit-learn's digits (one pass, the service's feeding pattern)."""


import pytest
import torch

from models.bench_digits import run_digits
from models.learner import IncrementalLearner
from models.nets import MLPConfig
from models.strategies import make_strategy

datasets = pytest.importorskip("sklearn.datasets")




def test_one_pass_over_the_stream_reaches_90_percent() -> None:
    result = run_digits(seed=0)
    assert result["trained"] > 1200  # ~90% of the 80% stream: the holdout was not trained on
    assert result["accuracy"] >= 0.90


def test_ewc_forgets_less_than_naive_on_a_new_input_domain() -> None:
    d = datasets.load_digits()
    x, y = torch.tensor(d.data, dtype=torch.float32), torch.tensor(d.target)
    g = torch.Generator().manual_seed(0)
    perm, idx = torch.randperm(64, generator=g), torch.randperm(len(x), generator=g)
    train, test = idx[:1400], idx[1400:]
    domains = [x, x[:, perm]]  # the same digits, then with shuffled pixels

    def old_domain_accuracy(strategy: str) -> float:
        learner = IncrementalLearner(MLPConfig(64, (128, 128), 10), make_strategy(strategy),
                                     seed=0)
        for i, xs in enumerate(domains):
            if i:
                learner.consolidate(domains[0][train], y[train])
            for _ in range(2):
                for s in range(0, len(train), 16):
                    learner.learn_many(xs[train[s : s + 16]], y[train[s : s + 16]])
        pred = learner.predict_proba(domains[0][test]).argmax(1)
        return (pred == y[test]).float().mean().item()

    naive, ewc = old_domain_accuracy("naive"), old_domain_accuracy("online-ewc")
    assert ewc >= naive + 0.04, (naive, ewc)
