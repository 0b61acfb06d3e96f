"""Mnemo's learning core: pure PyTorch, no I/O (never imports fastapi, redis or service)."""

from models.checkpoint import (
    CheckpointError,
    model_from_bytes,
    model_to_bytes,
    tensors_from_bytes,
    tensors_to_bytes,
)
from models.learner import IncrementalLearner, StepStats
from models.nets import MLP, GrowableHead, MLPConfig, Standardizer, build_model
from models.replay import ReplayBuffer, ReservoirBuffer, reservoir_slot
from models.strategies import Naive, OnlineEWC, Strategy, make_strategy

__all__ = [
    "MLP",
    "CheckpointError",
    "GrowableHead",
    "IncrementalLearner",
    "MLPConfig",
    "Naive",
    "OnlineEWC",
    "ReplayBuffer",
    "ReservoirBuffer",
    "Standardizer",
    "StepStats",
    "Strategy",
    "build_model",
    "make_strategy",
    "model_from_bytes",
    "model_to_bytes",
    "reservoir_slot",
    "tensors_from_bytes",
    "tensors_to_bytes",
]
