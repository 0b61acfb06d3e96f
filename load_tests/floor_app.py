"""The floor for `make bench-serve`: a bare FastAPI endpoint that parses the same predict JSON
with pydantic (strict, the same shape) and returns a constant. Run with uvicorn's defaults, or
with `--tuned` on the server settings Mnemo uses (to tell the app's cost from the server's)."""

from __future__ import annotations

import argparse

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from service.api.app import freeze_startup_objects, without_framework_telemetry
from service.api.write_coalescing import coalescing_http_protocol


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
    parser.add_argument("--tuned", action="store_true",
                        help="Mnemo's server settings: no OpenTelemetry check, one send per "
                             "response, start-up objects frozen out of the collector")
    args = parser.parse_args()
    app = create_floor_app(telemetry=not args.tuned)
    if args.tuned:
        freeze_startup_objects()
    uvicorn.run(app, host="127.0.0.1", port=args.port, access_log=False, log_config=None,
                http=coalescing_http_protocol() if args.tuned else "auto")


if __name__ == "__main__":
    main()
