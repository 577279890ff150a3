"""A FastAPI application timed by ``zibrato.integrations.starlette.ZibratoMiddleware``."""

from __future__ import annotations

import os

from fastapi import APIRouter, FastAPI, WebSocket
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from zibrato import Zibrato
from zibrato.integrations.starlette import ZibratoMiddleware

CHUNKS = 3


def make_app(z: Zibrato, **options) -> FastAPI:
    app = FastAPI()
    users = APIRouter(prefix="/users")

    @users.get("/{user_id}")
    async def user(user_id: int) -> JSONResponse:
        # the worker's pid: the server tests see workers recycled
        return JSONResponse({"user": user_id}, headers={"X-Worker-Pid": str(os.getpid())})

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks():
            for i in range(CHUNKS):
                yield f"chunk {i}\n".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/boom")
    async def boom() -> dict:
        raise ValueError("the raising route")

    @app.websocket("/ws/{room}")
    async def echo(websocket: WebSocket, room: str) -> None:
        await websocket.accept()
        text = await websocket.receive_text()
        await websocket.send_text(f"{room}: {text}")
        await websocket.close()

    async def item(request) -> PlainTextResponse:
        return PlainTextResponse(f"item {request.path_params['item_id']}")

    # a plain Starlette application mounted below a prefix: the route is the joined template
    app.mount("/legacy/v1", Starlette(routes=[Route("/items/{item_id:int}", item)]))
    app.include_router(users)

    app.add_middleware(ZibratoMiddleware, z=z, **options)
    return app


def create() -> FastAPI:
    """uvicorn's ``--factory support.webapps.fastapi_app:create``: a client from ``$ZIBRATO_PORT``."""
    return make_app(Zibrato())


__all__ = ["make_app", "create", "Mount"]
