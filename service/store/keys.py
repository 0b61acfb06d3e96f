"""Every Redis key name Mnemo uses. Nothing outside service/store/ builds a key."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """Key names of one model's deployment.

    Every key of a model, the prediction log included, carries the hash tag ``{model}``: on a
    Redis Cluster a model lives on one slot, so every Lua script, pipeline and transaction
    touches one node, and different models spread over the cluster's primaries. (Before the
    prediction log was tagged its keys were ``<namespace>:<model>:pred:…``/``…:pid:…``; see
    `legacy_prediction_patterns`.)
    """

    model: str
    namespace: str = "mnemo"

    @property
    def base(self) -> str:
        return f"{self.namespace}:{{{self.model}}}"

    # deployment
    @property
    def meta(self) -> str:
        return f"{self.base}:meta"

    @property
    def vocab(self) -> str:  # hash label -> class index
        return f"{self.base}:vocab"

    @property
    def vocab_order(self) -> str:  # list of labels in class-index order
        return f"{self.base}:vocab:order"

    # feedback
    @property
    def stream(self) -> str:
        return f"{self.base}:feedback"

    @property
    def seen_ids(self) -> str:  # the unbounded hash of earlier versions: read, then expires
        return f"{self.base}:feedback:seen"

    def seen_bucket(self, bucket: int) -> str:
        """Hash feedback/prediction id -> stream id for ids first accepted in one dedupe
        window (first label wins); each bucket expires (service/store/feedback.py)."""
        return f"{self.base}:feedback:seen:{bucket}"

    @property
    def seen_pattern(self) -> str:  # every dedupe bucket
        return f"{self.base}:feedback:seen:*"

    @property
    def counters(self) -> str:  # hash: accepted, duplicates
        return f"{self.base}:counters"

    group: str = "learners"

    # replay and evaluation
    @property
    def reservoir(self) -> str:
        return f"{self.base}:reservoir"

    @property
    def reservoir_meta(self) -> str:
        return f"{self.base}:reservoir:meta"

    @property
    def holdout(self) -> str:  # list, newest first, capped
        return f"{self.base}:holdout"

    @property
    def golden(self) -> str:  # list of golden-set entries
        return f"{self.base}:golden"

    # drift statistics: a capped sample of served inputs and predicted classes (docs/DESIGN.md §5)
    @property
    def drift_samples(self) -> str:
        return f"{self.base}:drift:samples"

    # registry
    def version(self, number: int) -> str:
        return f"{self.base}:version:{number}"

    @property
    def versions(self) -> str:  # sorted set of version numbers
        return f"{self.base}:versions"

    @property
    def next_version(self) -> str:
        return f"{self.base}:version:next"

    @property
    def statuses(self) -> str:  # hash version -> active|archived|rejected
        return f"{self.base}:version:status"

    @property
    def activated(self) -> str:  # set of versions ever activated (kept by retention)
        return f"{self.base}:version:activated"

    @property
    def current(self) -> str:  # hash: version, epoch
        return f"{self.base}:current"

    @property
    def events(self) -> str:
        return f"{self.base}:events"

    # learner
    @property
    def lease(self) -> str:
        return f"{self.base}:lease"

    @property
    def fence(self) -> str:
        return f"{self.base}:lease:fence"

    @property
    def cursor(self) -> str:  # hash: last_stream_id, samples_seen (committed at publish)
        return f"{self.base}:learner:cursor"

    @property
    def learner_stats(self) -> str:  # hash of live learner statistics (JSON fields)
        return f"{self.base}:learner:stats"

    @property
    def stats_history(self) -> str:  # capped stream of learner statistics over time (JSON)
        return f"{self.base}:learner:history"

    @property
    def control(self) -> str:  # hash: learning paused/running
        return f"{self.base}:learner:control"

    @property
    def purge_queue(self) -> str:  # list of pending purge requests (JSON), oldest first
        return f"{self.base}:purge:queue"

    def purge(self, purge_id: str) -> str:  # hash: status, tag, removed
        return f"{self.base}:purge:{purge_id}"

    # prediction log
    def prediction_batch(self, batch_id: str) -> str:
        return f"{self.base}:pred:{batch_id}"

    def prediction_alias(self, prediction_id: str) -> str:
        return f"{self.base}:pid:{prediction_id}"

    @property
    def prediction_log_bytes(self) -> str:  # hash time bucket -> bytes the log stored then
        return f"{self.base}:predlog:bytes"

    def all_patterns(self) -> list[str]:
        """Glob patterns covering every key of this model (for purge and test clean-up)."""
        return [f"{self.base}:*"]

    def legacy_prediction_patterns(self) -> list[str]:
        """The prediction log's keys as versions before the hash tag wrote them: never on a
        cluster, and gone once MNEMO_PREDICTION_TTL_SECONDS has passed since the upgrade;
        purge still deletes them until then."""
        return [f"{self.namespace}:{self.model}:pred:*", f"{self.namespace}:{self.model}:pid:*"]
