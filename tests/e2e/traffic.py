"""A labelled stream for end-to-end tests: tagged predict requests and feedback by prediction
id, with an optional covariate shift and label swap."""

from __future__ import annotations

import random

import httpx

TAGS = ("t1", "t2")
DIM, SHIFTED = 8, slice(4, 8)  # the covariate shift moves half the features by 1 std
ROWS = 8  # rows per predict request: the API samples up to 8 rows of each into the drift stream


class Stream:
    """Tagged predict requests of ROWS rows and feedback for each row by prediction id. The
    label is "a" iff x0 > 0 (x0 never moves); `shift` moves features 4–7 by one std, `swap`
    exchanges the labels. Feedback goes in batches of 64."""

    def __init__(self, api: httpx.Client) -> None:
        self.api, self.rng, self.sent, self.requests = api, random.Random(7), 0, 0

    def send(self, requests: int, shift: bool = False, swap: bool = False) -> None:
        items: list[dict[str, str]] = []
        for _ in range(requests):
            rows = [[self.rng.gauss(0.0, 1.0) + (1.0 if shift and SHIFTED.start <= j else 0.0)
                     for j in range(DIM)] for _ in range(ROWS)]
            tag = TAGS[self.requests % 2]
            self.requests += 1
            answer = self.api.post("/v1/predict", json={"inputs": rows, "tag": tag})
            assert answer.status_code == 200, answer.text
            for prediction, row in zip(answer.json()["predictions"], rows, strict=True):
                items.append({"prediction_id": prediction["id"],
                              "label": "a" if (row[0] > 0) != swap else "b"})
            if len(items) >= 64:
                self._feedback(items)
                items = []
        if items:
            self._feedback(items)

    def _feedback(self, items: list[dict[str, str]]) -> None:
        fed = self.api.post("/v1/feedback", json={"items": items})
        assert fed.status_code == 202, fed.text
        self.sent += len(items)
