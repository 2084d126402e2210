"""The wallet page (`/ui`), the operator's partitions page (`/ui/ops`) and the books page
(`/ui/books`): static HTML and JS that call the public API with the user's key. Nothing here reads
the ledger itself."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, RedirectResponse

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
ASSETS = {
    "style.css": "text/css",
    "common.js": "text/javascript",
    "wallet.js": "text/javascript",
    "ops.js": "text/javascript",
    "books.js": "text/javascript",
}
# Third-party code, served from our own origin (so the CSP below still holds): see ui/vendor/README.md.
VENDOR_ASSETS = {
    "chart.umd.min.js": "text/javascript",
    "chart.js.LICENSE.md": "text/plain; charset=utf-8",
}
# Only our own files may run or load; the key in sessionStorage is never sent anywhere else.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(prefix="/ui", include_in_schema=False)
root = APIRouter(include_in_schema=False)


@root.get("/")
async def home() -> RedirectResponse:
    """The URL `ledgerq dev` prints, opened in a browser, lands on the wallet page."""
    return RedirectResponse("/ui", status_code=307)


@router.get("")
async def wallet() -> FileResponse:
    return FileResponse(UI_DIR / "wallet.html", media_type="text/html", headers=HEADERS)


@router.get("/ops")
async def operator() -> FileResponse:
    return FileResponse(UI_DIR / "ops.html", media_type="text/html", headers=HEADERS)


@router.get("/books")
async def books() -> FileResponse:
    return FileResponse(UI_DIR / "books.html", media_type="text/html", headers=HEADERS)


@router.get("/static/vendor/{name}")
async def vendor_asset(name: str) -> FileResponse:
    if name not in VENDOR_ASSETS:
        raise HTTPException(404)
    return FileResponse(UI_DIR / "vendor" / name, media_type=VENDOR_ASSETS[name], headers=HEADERS)


@router.get("/static/{name}")
async def asset(name: str) -> FileResponse:
    if name not in ASSETS:  # a fixed list: no path from the request ever reaches the filesystem
        raise HTTPException(404)
    return FileResponse(UI_DIR / name, media_type=ASSETS[name], headers=HEADERS)
