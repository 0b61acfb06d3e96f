"""A realistic mix for locust: every user predicts, and for a fraction of its predictions sends
the label later by prediction id (as an application does once it learns the truth).

    locust -f load_tests/locustfile.py --host http://127.0.0.1:8000 --headless -u 50 -r 10 -t 60s

Settings (environment): LOAD_DIM (MNEMO_INPUT_DIM, default 4), LOAD_LABELS (comma-separated,
default the demo's iris labels), LOAD_ROWS (rows per predict, 1), LOAD_FEEDBACK_FRACTION (0.2),
LOAD_TOKEN (the API token, if one is set). locust is closed-loop; for latency under a fixed
arrival rate use load_tests/open_loop.py.

Requests go through locust's own client, not mnemo_client: locust times and counts each
request it sends (the client's retries would hide 429/503 and count retries as latency).
"""

from __future__ import annotations

import os
import random

from locust import FastHttpUser, between, task

DIM = int(os.environ.get("LOAD_DIM", "4"))
LABELS = os.environ.get("LOAD_LABELS", "setosa,versicolor,virginica").split(",")
ROWS = int(os.environ.get("LOAD_ROWS", "1"))
FEEDBACK_FRACTION = float(os.environ.get("LOAD_FEEDBACK_FRACTION", "0.2"))
TOKEN = os.environ.get("LOAD_TOKEN")


class MnemoUser(FastHttpUser):
    wait_time = between(0.0, 0.02)

    def on_start(self) -> None:
        self.headers = {"Authorization": f"Bearer {TOKEN}"} if TOKEN else {}

    @task
    def predict_then_label(self) -> None:
        rows = [[round(random.gauss(0, 1), 4) for _ in range(DIM)] for _ in range(ROWS)]
        with self.client.post("/v1/predict", json={"inputs": rows}, headers=self.headers,
                              catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"predict {response.status_code}: {response.text[:200]}")
                return
            predictions = response.json()["predictions"]
        if random.random() >= FEEDBACK_FRACTION:
            return
        items = [{"prediction_id": p["id"], "label": random.choice(LABELS)} for p in predictions]
        with self.client.post("/v1/feedback", json={"items": items}, headers=self.headers,
                              catch_response=True) as response:
            if response.status_code != 202:
                response.failure(f"feedback {response.status_code}: {response.text[:200]}")
