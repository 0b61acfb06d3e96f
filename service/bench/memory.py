"""Memory figures for a run: what the learner must keep, and the process's peak.

tracemalloc cannot see torch's CPU allocations (they bypass Python's allocator), so the peak
is the process's resident high-water mark, reset at the start of each run where Linux allows
(/proc/self/clear_refs), or torch.cuda's counter on a GPU.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import torch

from models.learner import IncrementalLearner
from models.replay import ReplayBuffer

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with contextlib.suppress(OSError):  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
        _CLEAR_REFS.write_text("5")


def peak_rss_mib() -> float:
    """Peak resident memory since reset_peak (MiB); 0.0 where the platform does not say."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        match = re.search(r"VmHWM:\s+(\d+) kB", _STATUS.read_text())
    except OSError:
        return 0.0
    return int(match.group(1)) / 1024 if match else 0.0


def state_mib(learner: IncrementalLearner, buffer: ReplayBuffer | None = None) -> float:
    """Model, optimizer moments, strategy state (Fisher, anchors, ...) and the replay buffer:
    the memory a strategy costs in the service, independent of allocator noise."""
    total = sum(t.numel() * t.element_size() for t in learner.state_dict().values())
    # A generative buffer's memory is its model's state, not tensors of samples.
    held = (() if buffer is None else buffer.state_dict().values()
            if hasattr(buffer, "state_dict") else vars(buffer).values())
    total += sum(t.numel() * t.element_size() for t in held if isinstance(t, torch.Tensor))
    return total / 2**20
