"""The web demo on its own: the page at `/`, and `/v1/...` forwarded to an OpenAI-compatible server.

The page (serving/web_demo.html) is the one `serve_openai_api.py --web_demo` serves at `/demo`; here it
is served by a small app of its own that forwards the page's API calls (streams included) to
`base_url`, adding the server's API key, so the key never reaches the browser and no CORS is needed.
A client that closes its stream closes the forwarded one, so the server cancels the job.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import anyio
import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from serving.protocol import APIError

DEMO_PAGE = Path(__file__).with_name("web_demo.html")
FORWARDED = ("v1/models", "v1/chat/completions", "v1/completions")


def create_demo_app(base_url: str, api_key: str | None = None, *, timeout: float = 600.0) -> FastAPI:
    """`base_url`: the server's /v1 URL, e.g. http://127.0.0.1:6006/v1."""
    root = base_url.rstrip("/").removesuffix("/v1")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        async with httpx.AsyncClient(base_url=root, timeout=httpx.Timeout(timeout, connect=10.0)) as client:
            app.state.client = client
            yield

    app = FastAPI(title="ParallelMind web demo", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse(DEMO_PAGE.read_text(encoding="utf-8"))

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def forward(path: str, request: Request):
        if path not in FORWARDED and not path.startswith("v1/models/"):
            err = APIError(404, f"{request.method} /{path}: not found", code="not_found")
            return JSONResponse(err.body(), status_code=404)
        headers = {"Content-Type": request.headers.get("content-type", "application/json")}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        elif "authorization" in request.headers:
            headers["Authorization"] = request.headers["authorization"]
        client: httpx.AsyncClient = request.app.state.client
        upstream = client.build_request(request.method, "/" + path, headers=headers, content=await request.body())
        try:
            resp = await client.send(upstream, stream=True)
        except httpx.HTTPError as e:
            err = APIError(502, f"the server at {base_url} did not answer: {type(e).__name__}: {e}",
                           code="bad_gateway")
            return JSONResponse(err.body(), status_code=502)

        async def body():
            try:
                async for chunk in resp.aiter_raw():
                    yield chunk
            finally:  # also when the browser goes away: closing the upstream stream cancels the job there
                with anyio.CancelScope(shield=True):
                    await resp.aclose()
        return StreamingResponse(body(), status_code=resp.status_code, media_type=resp.headers.get("content-type"))

    return app
