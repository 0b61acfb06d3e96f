"""Everything one API process shares between requests, built by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from service.config import Settings
from service.monitor.api_metrics import ApiMetrics
from service.serving.batcher import MicroBatcher
from service.serving.holder import ModelHolder
from service.store.control import Control
from service.store.feedback import FeedbackStore
from service.store.golden import GoldenSet
from service.store.keys import Keys
from service.store.predictions import PredictionLog
from service.store.registry import Registry
from service.store.stats import StatsStore


@dataclass
class AppContext:
    settings: Settings
    redis: Redis
    keys: Keys
    registry: Registry
    feedback: FeedbackStore
    predictions: PredictionLog
    golden: GoldenSet
    stats: StatsStore
    holder: ModelHolder
    metrics: ApiMetrics
    control: Control
    batcher: MicroBatcher
