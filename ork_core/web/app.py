"""The ASGI app of ``ork serve``: the JSON API under ``/api/v1`` and the server-rendered pages.

FastAPI (on Starlette, served by uvicorn) rather than bare Starlette: the API's OpenAPI
schema and its input validation come from the same pydantic models ork already uses, so
every bad query or body is refused with a 422 naming the field, and the schema cannot drift
from the code. The pages are Jinja templates (autoescaped) with one small vendored script.

The web process never runs a task: an action (trigger, cancel, retry, pause) is a write
through `ork_core.actions`, and the `ork scheduler` that owns (or will own) the run acts on
it. Mutations need the API token in an ``Authorization: Bearer`` header — never a cookie,
so a page on another site cannot make the browser send it (CSRF-safe by construction).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import Body, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ork_core.errors import OrkError, RunNotFoundError
from ork_core.secrets import mask, mask_value
from ork_core.storage.base import FINAL_RUN_STATUSES, Storage
from ork_core.web import data
from ork_core.web.layout import NODE_H, NODE_W

HERE = Path(__file__).parent
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
LOG_POLL = 0.5
"""Seconds between two reads of a log that a client long-polls (``wait``)."""
PAGE_EXCERPT = 2000
"""Characters of each output and error a run page reads (the API's run endpoint gives them whole)."""


class ApiError(Exception):
    """An answer with a status and a JSON body ``{"error": message, "field": field}``."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


@dataclass
class WebConfig:
    """What the app serves from: the project's storage and plugins, and how it checks tokens."""

    storage: Storage
    token: str
    public_reads: bool = True
    """Reads without a token: what ``ork serve`` sets when bound to a loopback address only."""
    project: Any = None
    plugins: Any = None
    executor_rows: Callable[[], list[dict[str, Any]]] = field(default=lambda: [])
    next_tick: Callable[[Any, float], float | None] | None = None
    clock: Callable[[], float] = time.time
    """The time ticks are decided in (`ork_core.clock`: ``ORK_CLOCK`` as `ork scheduler` reads it)."""
    load_workflow: Callable[[str], Any] | None = None
    """Resolves a workflow name or path for a trigger (`ork_core.actions.load_workflow_for_trigger`)."""


# -- bodies -------------------------------------------------------------------------------------

ParamValue = str | int | float | bool


class TriggerBody(BaseModel):
    workflow: str = Field(min_length=1, description="A workflow name (a stored schedule's, or from ork.yaml `workflows:`) or a path.")
    params: dict[str, ParamValue] = Field(default_factory=dict, description="Run parameters; a value takes its default's type.")


class RetryBody(BaseModel):
    tasks: list[str] | None = Field(default=None, description="Failed tasks to retry (default: every failed one).")
    downstream: bool = Field(default=True, description="Also reset the tasks downstream of them.")


class PauseBody(BaseModel):
    paused: bool


# -- helpers ------------------------------------------------------------------------------------


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _iso_ts(value: dt.datetime | dt.date | None) -> float | None:
    if value is None:
        return None
    if not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    if value.tzinfo is None:
        value = value.astimezone()  # naive: the server's local time, like the CLI's timestamps
    return value.timestamp()


def _fmt_ts(value: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value)) if value else "-"


def _fmt_dur(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.2f}s"
    minutes, seconds = divmod(int(value), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def create_app(config: WebConfig) -> FastAPI:
    store = data.Store(config.storage)
    templates = Environment(
        loader=PackageLoader("ork_core.web", "templates"), autoescape=select_autoescape(default=True), trim_blocks=True,
        lstrip_blocks=True,
    )
    templates.globals.update(fmt_ts=_fmt_ts, fmt_dur=_fmt_dur, NODE_W=NODE_W, NODE_H=NODE_H, mask=mask)

    app = FastAPI(
        title="ork",
        version="1",
        description=(
            "The state of ork runs, tasks, logs and schedules, and actions on them. Reads are public when "
            "`ork serve` listens on 127.0.0.1 only; otherwise, and always for POST, send "
            "`Authorization: Bearer <ORK_API_TOKEN>`."
        ),
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # Swagger UI loads its assets from a CDN: nothing is fetched from the internet
        redoc_url=None,
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    # -- errors: one JSON shape, naming the field ---------------------------------------------

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        if request.method == "GET" and not request.url.path.startswith("/api/"):
            # a page: 401 on a non-loopback address asks for the token (kept in a cookie, for reads only)
            name = "login.html" if exc.status == 401 else "error.html"
            html = templates.get_template(name).render(message=exc.message, status=exc.status, public_reads=config.public_reads)
            return HTMLResponse(html, status_code=exc.status)
        headers = {"WWW-Authenticate": 'Bearer realm="ork"'} if exc.status == 401 else None
        return JSONResponse({"error": exc.message, "field": exc.field}, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ())]
            if loc and loc[0] in ("body", "query", "path", "header"):
                loc = loc[1:]
            # a union (str | int | …) reports once per member: the field is the same
            loc = [p for p in loc if p not in _UNION_MEMBERS and "[" not in p]
            errors.append({"field": ".".join(loc) or None, "message": str(err.get("msg", "invalid"))})
        first = errors[0] if errors else {"field": None, "message": "invalid request"}
        message = f"{first['field']}: {first['message']}" if first["field"] else str(first["message"])
        return JSONResponse({"error": message, "field": first["field"], "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return JSONResponse({"error": str(exc.detail), "field": None}, status_code=exc.status_code, headers=exc.headers)

    @app.middleware("http")
    async def _headers(request: Request, call_next: Callable[[Request], Any]) -> Response:
        if config.public_reads:
            # Bound to loopback: refuse another Host, so a page whose DNS name re-binds to
            # 127.0.0.1 cannot read the API from the victim's browser.
            host = _host_of(request.headers.get("host", ""))
            if host and host not in LOOPBACK_HOSTS:
                return JSONResponse({"error": f"Host {host!r} is not served; use 127.0.0.1", "field": "Host"}, status_code=421)
        response: Response = await call_next(request)
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    # -- auth ------------------------------------------------------------------------------------

    def _token_ok(given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), config.token.encode())

    def can_read(request: Request) -> None:
        if config.public_reads:
            return
        cookie = request.cookies.get("ork_token")
        if not (_token_ok(_bearer(request)) or _token_ok(unquote(cookie) if cookie else None)):
            raise ApiError(401, "reads need the API token on this address: send Authorization: Bearer <token>", "Authorization")

    def can_write(request: Request) -> None:
        if not _token_ok(_bearer(request)):
            raise ApiError(
                401, "this action needs the API token: send Authorization: Bearer <token> (ORK_API_TOKEN, or the one ork serve printed)",
                "Authorization",
            )

    Read = Depends(can_read)
    Write = Depends(can_write)

    def _run_or_404(fn: Callable[[], Any], run_id: str) -> Any:
        try:
            return fn()
        except RunNotFoundError as exc:
            raise ApiError(404, str(exc), "run_id") from None

    # -- API: reads ------------------------------------------------------------------------------

    @app.get("/api/v1/runs", dependencies=[Read], tags=["runs"], summary="Runs, newest first, filtered and paged")
    def api_runs(
        workflow: Annotated[str | None, Query(description="Only this workflow's runs.")] = None,
        status: Annotated[list[str] | None, Query(description="Only runs in these statuses (repeat, or comma-separated).")] = None,
        since: Annotated[dt.datetime | dt.date | None, Query(description="Created at or after (ISO 8601).")] = None,
        until: Annotated[dt.datetime | dt.date | None, Query(description="Created before (ISO 8601).")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        statuses = _statuses(status)
        runs, more = data.list_runs(
            store, workflow=workflow, statuses=statuses, since=_iso_ts(since), until=_iso_ts(until), limit=limit, offset=offset,
        )
        return {
            "runs": [data.run_summary(r) for r in runs],
            "limit": limit,
            "offset": offset,
            "next_offset": offset + len(runs) if more else None,
        }

    @app.get("/api/v1/runs/{run_id}", dependencies=[Read], tags=["runs"], summary="A run with its tasks, attempts, outputs and errors")
    def api_run(
        run_id: str,
        excerpt: Annotated[int | None, Query(ge=0, description="Cut each output's JSON and each error to this many characters.")] = None,
    ) -> dict[str, Any]:
        result: dict[str, Any] = _run_or_404(lambda: data.run_detail(store, run_id, excerpt=excerpt), run_id)
        return result

    @app.get("/api/v1/runs/{run_id}/logs", dependencies=[Read], tags=["runs"], summary="Log lines, paged; `wait` long-polls for new ones")
    async def api_logs(
        run_id: str,
        task: Annotated[str | None, Query(description="Only this task's lines.")] = None,
        attempt: Annotated[int | None, Query(ge=1, description="Only this attempt's lines.")] = None,
        offset: Annotated[int, Query(ge=0, description="Lines to skip: the `next_offset` of the previous page.")] = 0,
        limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
        wait: Annotated[float, Query(ge=0, le=30, description="Seconds to wait for a line past `offset` while the run goes on.")] = 0,
    ) -> dict[str, Any]:
        # async, and sleeping on the event loop between reads: a page tailing a log holds no
        # worker thread while it waits, however many pages are open
        record = await run_in_threadpool(_run_or_404, lambda: store.call(lambda s: s.get_run(run_id, excerpt=0)), run_id)
        if task is not None and task not in record.tasks:
            from ork_core.yamlfile import suggest

            raise ApiError(404, f"run {run_id} has no task {task!r}{suggest(task, record.tasks)}", "task")
        deadline = time.monotonic() + wait
        while True:
            page = await run_in_threadpool(data.log_page, store, run_id, task, attempt, offset, limit)
            if page is not None:
                return {"lines": page.lines, "next_offset": page.next_offset, "run_status": page.run_status}
            if time.monotonic() >= deadline:
                return {"lines": [], "next_offset": offset, "run_status": record.status}
            await asyncio.sleep(LOG_POLL)

    @app.get("/api/v1/runs/{run_id}/metrics", dependencies=[Read], tags=["runs"], summary="Metrics the run's tasks recorded")
    def api_metrics(run_id: str) -> dict[str, Any]:
        _run_or_404(lambda: store.call(lambda s: s.get_run(run_id, excerpt=0)), run_id)
        rows = store.call(lambda s: s.metrics(run_id))
        return {
            "metrics": [
                {"task": m.task, "attempt": m.attempt, "ts": m.ts, "name": m.name, "value": m.value, "labels": mask_value(m.labels)}
                for m in rows
            ]
        }

    @app.get("/api/v1/jobs", dependencies=[Read], tags=["jobs"], summary="Deferred external jobs ork waits on (as `ork jobs --json`)")
    def api_jobs() -> dict[str, Any]:
        return {"jobs": [data.job_json(t) for t in store.call(lambda s: s.deferred_tasks())]}

    @app.get("/api/v1/executors", dependencies=[Read], tags=["executors"], summary="Executors, as `ork executors --json`")
    def api_executors() -> dict[str, Any]:
        return {"executors": _executors()}

    @app.get("/api/v1/schedules", dependencies=[Read], tags=["schedules"], summary="Stored schedules, paused or not, last and next tick")
    def api_schedules() -> dict[str, Any]:
        return {"schedules": data.schedules(store, config.next_tick, config.clock())}

    # -- API: actions ----------------------------------------------------------------------------

    @app.post("/api/v1/runs", dependencies=[Write], status_code=201, tags=["actions"], summary="Trigger a run (queued for ork scheduler)")
    def api_trigger(body: TriggerBody) -> dict[str, Any]:
        from ork_core import actions
        from ork_core.scheduler import coerce_params

        if config.load_workflow is None:
            raise ApiError(503, "this server cannot load workflows", "workflow")
        try:
            workflow = config.load_workflow(body.workflow)
        except OrkError as exc:
            # a name ork scheduler stored in *this* database (`ork serve --db …`): load its file
            files = [rec.file for rec in store.call(lambda s: s.list_schedules()) if rec.workflow == body.workflow]
            if not files:
                raise ApiError(422, str(exc), "workflow") from None
            try:
                workflow = config.load_workflow(files[0])
            except OrkError as again:
                raise ApiError(422, str(again), "workflow") from None
        given = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in body.params.items()}
        try:
            params = coerce_params(workflow, given)
        except OrkError as exc:
            raise ApiError(422, str(exc), _param_field(str(exc), given)) from None
        run_id = store.call(lambda s: actions.trigger(s, workflow, params))
        return {"id": run_id, "status": "queued", "workflow": workflow.name, "params": mask_value(params)}

    @app.post("/api/v1/runs/{run_id}/cancel", dependencies=[Write], status_code=202, tags=["actions"], summary="Ask the run's scheduler to cancel it")
    def api_cancel(run_id: str) -> dict[str, Any]:
        from ork_core import actions

        _action(lambda: store.call(lambda s: actions.request_cancel(s, run_id)), run_id)
        return {"id": run_id, "cancel_requested": True}

    @app.post("/api/v1/runs/{run_id}/retry", dependencies=[Write], tags=["actions"], summary="Failed tasks (and downstream) back to pending, the run queued")
    def api_retry(run_id: str, body: Annotated[RetryBody | None, Body()] = None) -> dict[str, Any]:
        from ork_core import actions

        body = body or RetryBody()
        if body.tasks is not None:
            record = _run_or_404(lambda: store.call(lambda s: s.get_run(run_id, excerpt=0)), run_id)
            for index, name in enumerate(body.tasks):
                if name not in record.tasks:
                    from ork_core.yamlfile import suggest

                    raise ApiError(422, f"run {run_id} has no task {name!r}{suggest(name, record.tasks)}", f"tasks.{index}")
        tasks = body.tasks
        reset = _action(lambda: store.call(lambda s: actions.retry(s, run_id, tasks, downstream=body.downstream)), run_id)
        return {"id": run_id, "status": "queued", "reset": reset}

    @app.post("/api/v1/schedules/{workflow}/pause", dependencies=[Write], tags=["actions"], summary="Pause or unpause a workflow's schedules")
    def api_pause(workflow: str, body: PauseBody) -> dict[str, Any]:
        from ork_core import actions

        known = {rec.workflow for rec in store.call(lambda s: s.list_schedules())}
        if workflow not in known:
            from ork_core.yamlfile import suggest

            raise ApiError(404, f"no stored schedule for workflow {workflow!r}{suggest(workflow, known)}", "workflow")
        store.call(lambda s: actions.set_paused(s, workflow, body.paused))
        return {"workflow": workflow, "paused": body.paused}

    def _action(fn: Callable[[], Any], run_id: str) -> Any:
        try:
            return fn()
        except RunNotFoundError as exc:
            raise ApiError(404, str(exc), "run_id") from None
        except OrkError as exc:
            raise ApiError(409, str(exc), "run_id") from None

    def _executors() -> list[dict[str, Any]]:
        rows = config.executor_rows()
        return [{k: (mask(v) if isinstance(v, str) else v) for k, v in row.items()} for row in rows]

    # -- pages -----------------------------------------------------------------------------------

    def page(name: str, request: Request, **values: Any) -> HTMLResponse:
        html = templates.get_template(name).render(request=request, public_reads=config.public_reads, **values)
        return HTMLResponse(html)

    @app.get("/", include_in_schema=False, dependencies=[Read])
    def runs_page(
        request: Request,
        workflow: str | None = None,
        status: Annotated[list[str] | None, Query()] = None,
        since: str | None = None,
        until: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> HTMLResponse:
        statuses = _statuses(status)
        day_from, day_to = _day(since, "since"), _day(until, "until")  # the form sends "" for no date
        runs, more = data.list_runs(
            store, workflow=workflow or None, statuses=statuses, since=_iso_ts(day_from),
            until=_iso_ts(day_to + dt.timedelta(days=1)) if day_to else None, limit=limit, offset=offset,
        )
        names = sorted({r.workflow_name for r in store.call(lambda s: s.list_runs(200))} | {s.workflow for s in store.call(lambda s: s.list_schedules())})
        return page(
            "runs.html", request, runs=[data.run_summary(r) for r in runs], more=more, limit=limit, offset=offset,
            workflow=workflow or "", status=statuses or [], since=day_from, until=day_to, statuses=data.RUN_STATUSES, names=names,
        )

    @app.get("/runs/{run_id}", include_in_schema=False, dependencies=[Read])
    def run_page(request: Request, run_id: str) -> HTMLResponse:
        run = _page_run(run_id)
        metrics = store.call(lambda s: s.metrics(run_id))
        return page("run.html", request, run=run, graph=store.layout(run["_hash"]), metrics=metrics, **_panel_values(run))

    @app.get("/runs/{run_id}/panel", include_in_schema=False, dependencies=[Read])
    def run_panel(request: Request, run_id: str) -> Response:
        """The parts of a run page that change while it goes on, for the page's live update.

        A page polls this every second: when no state changed (and, for an unfinished run,
        within the same `PANEL_REDRAW` seconds, so running bars still grow) it answers 304
        from one cheap read, without rendering a 2,000-task panel again.
        """
        record = _run_or_404(lambda: store.call(lambda s: s.get_run(run_id, excerpt=0)), run_id)
        etag = _panel_etag(record)
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        run = _page_run(run_id)
        response = page("run_panel.html", request, run=run, **_panel_values(run))
        response.headers["ETag"] = etag
        response.headers["Cache-Control"] = "no-store"
        return response

    def _page_run(run_id: str) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            run = data.run_detail(store, run_id, excerpt=PAGE_EXCERPT)
            run["_hash"] = store.call(lambda s: s.get_run(run_id, excerpt=0)).workflow_hash
            return run

        result: dict[str, Any] = _run_or_404(read, run_id)
        return result

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/schedules", include_in_schema=False, dependencies=[Read])
    def schedules_page(request: Request) -> HTMLResponse:
        return page("schedules.html", request, schedules=data.schedules(store, config.next_tick, config.clock()))

    @app.get("/executors", include_in_schema=False, dependencies=[Read])
    def executors_page(request: Request) -> HTMLResponse:
        jobs = [data.job_json(t) for t in store.call(lambda s: s.deferred_tasks())]
        return page("executors.html", request, executors=_executors(), jobs=jobs)

    return app


_UNION_MEMBERS = frozenset({"str", "int", "float", "bool", "datetime", "date", "list", "dict", "none"})


PANEL_REDRAW = 5.0
"""Seconds between two redraws of an unfinished run's panel when no state changed."""


def _panel_etag(record: Any) -> str:
    """What the panel shows, in a digest: run and task states, attempts, times, cancel requests."""
    import hashlib

    parts = [record.status, str(record.cancel_requested), str(record.started_at), str(record.finished_at)]
    if record.status not in FINAL_RUN_STATUSES:
        parts.append(str(int(time.time() // PANEL_REDRAW)))
    for t in record.tasks.values():
        parts.append(f"{t.name}\0{t.status}\0{t.attempt}\0{t.started_at}\0{t.finished_at}")
    return '"' + hashlib.blake2b("\n".join(parts).encode(), digest_size=12).hexdigest() + '"'


def _day(value: str | None, name: str) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ApiError(422, f"{name}: {value!r} is not a date (YYYY-MM-DD)", name) from None


def _host_of(header: str) -> str:
    if header.startswith("["):
        return header[: header.find("]") + 1]
    return header.rsplit(":", 1)[0]


def _statuses(given: list[str] | None) -> list[str] | None:
    if not given:
        return None
    out = [s.strip() for item in given for s in item.split(",") if s.strip()]
    for s in out:
        if s not in data.RUN_STATUSES:
            raise ApiError(422, f"status {s!r} is not a run status; one of: {', '.join(data.RUN_STATUSES)}", "status")
    return out or None


def _param_field(message: str, given: dict[str, str]) -> str:
    for key in given:
        if f"--param {key}=" in message or f"--param {key!r}" in message:
            return f"params.{key}"
    return "params"


def _panel_values(run: dict[str, Any]) -> dict[str, Any]:
    """The Gantt chart's bars: every attempt of every task, on the run's time axis."""
    now = time.time()
    starts = [a["started_at"] for t in run["tasks"] for a in t["attempts"] if a.get("started_at")]
    ends = [a.get("finished_at") or now for t in run["tasks"] for a in t["attempts"] if a.get("started_at")]
    t0 = min(starts, default=run["started_at"] or now)
    t1 = max([*ends, t0 + 0.001])
    span = t1 - t0
    bars = []
    for row, t in enumerate(run["tasks"]):
        for a in t["attempts"]:  # storage's attempts: the superseded ones and the current one
            if not a.get("started_at"):
                continue
            end = a.get("finished_at") or now
            bars.append(
                {
                    "row": row, "task": t["name"], "attempt": a["attempt"], "status": a["status"],
                    "x": (a["started_at"] - t0) / span * 100, "w": max((end - a["started_at"]) / span * 100, 0.5),
                    "dur": end - a["started_at"],
                }
            )
    return {"bars": bars, "span": span, "final": run["status"] in FINAL_RUN_STATUSES}


__all__ = ["ApiError", "WebConfig", "create_app"]
