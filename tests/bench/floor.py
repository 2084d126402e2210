"""F, the framework's floor: a bare FastAPI POST that parses the body and answers 202, served by
uvicorn as `ledgerq api` is (uvloop, httptools), driven by the same client as the `http` door. What
ledgerq's API spends per command above this is its own work (keys, claim, audit, enqueue)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

app = FastAPI()


@app.post("/v1/commands")
async def submit(request: Request) -> JSONResponse:
    data = await request.json()
    return JSONResponse({"id": data["id"], "status": "queued", "partition": 0}, status_code=202)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
