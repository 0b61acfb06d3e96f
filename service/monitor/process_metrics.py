"""What every Mnemo process exports besides its own metrics (docs/DESIGN.md §7):
prometheus_client's process, platform and GC collectors (`process_*` on Linux, `python_info`,
`python_gc_*`) and `mnemo_build_info`. The processes build their own registries (never the
library's global one), so these are not there unless registered here, once per process."""

from __future__ import annotations

import platform

import torch
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)

from service.monitor.families import Families
from service.version import package_version


def register_process_metrics(registry: CollectorRegistry, model: str) -> None:
    """The collectors (read at scrape time: nothing per request, registered once per registry)
    and the build-info series of `model` (one per model the process serves or trains)."""
    families = Families(registry)

    def collectors() -> None:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)

    families.once("process collectors", collectors)
    # The usual `*_build_info` shape: constant 1, the facts in labels, so a query can join
    # them onto any series by `model` (or by instance).
    families.gauge("mnemo_build_info", "Package, Python and PyTorch versions of this process",
                   ["model", "version", "python", "torch"]).labels(
        model=model, version=package_version(), python=platform.python_version(),
        torch=str(torch.__version__),  # with its build variant (+cpu, +cu121)
    ).set(1)
