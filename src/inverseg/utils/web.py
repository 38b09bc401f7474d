"""What inverseg's web apps (the preference study, the studio) share: JSON refusals, never an HTML error page.

Every refused request is answered ``{"error": "..."}`` with a 4xx status; FastAPI's own refusals (unknown
route, wrong method, unparsable parameters) are turned into the same shape.  Needs the ``web`` extra (FastAPI).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def json_api(title: str) -> FastAPI:
    """A FastAPI app without the interactive docs, whose HTTP and validation errors are JSON ``{"error": …}``."""
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return error(400, "malformed request")

    return app


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the app with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning")
