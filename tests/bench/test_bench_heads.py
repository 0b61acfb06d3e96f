"""Per-tag heads on split digits, through the benchmark's service learning path: with the task
as the tag, each head answers over its own labels, so even naive fine-tuning keeps the old
tasks (a shared head read over every label forgets them)."""

from __future__ import annotations

import torch

from service.bench import heads


def test_per_tag_heads_keep_old_tasks_that_a_shared_head_forgets() -> None:
    torch.set_num_threads(1)
    results = heads.run([0, 1], strategies=["naive"], log=lambda _: None)
    for seed in (0, 1):
        shared, = (r for r in results if r["seed"] == seed and r["heads"] == "shared")
        tagged, = (r for r in results if r["seed"] == seed and r["heads"] == "per-tag")
        assert shared["settings"]["class"]["final_acc"] < 0.3  # five tasks, the last one kept
        assert tagged["settings"]["tag"]["final_acc"] > 0.85
        assert tagged["settings"]["tag"]["forgetting"] < 0.1
        assert tagged["preq_acc"] > shared["preq_acc"] + 0.05
    table = heads.markdown(results, "python -m service bench --scenarios heads")
    assert "| per-tag | naive | tag |" in table and "| shared | naive | class |" in table
