"""The floor for `make bench-serve`: a bare FastAPI endpoint that parses the same predict JSON
with pydantic (strict, the same shape) and returns a constant. Run with uvicorn like Mnemo."""

from __future__ import annotations

import argparse

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from service.api.app import without_framework_telemetry


class Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    inputs: list[list[float]] = Field(min_length=1)
    tag: str | None = None
    ids: list[str] | None = None


def create_floor_app(telemetry: bool = True) -> FastAPI:
    """telemetry=False: also without FastAPI's per-request OpenTelemetry check, as Mnemo runs."""
    app = FastAPI(**without_framework_telemetry()) if not telemetry else FastAPI()

    @app.post("/v1/predict")
    async def predict(body: Body) -> dict[str, int]:
        return {"ok": 1}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--no-telemetry", action="store_true")
    args = parser.parse_args()
    uvicorn.run(create_floor_app(telemetry=not args.no_telemetry), host="127.0.0.1",
                port=args.port, access_log=False, log_config=None)


if __name__ == "__main__":
    main()
