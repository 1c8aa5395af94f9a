"""``/console`` pages, sign-in and sign-out, and the console's static files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from producers.http.auth import KeyResolver
from producers.http.sessions import COOKIE, LOGIN_COOKIE, Session, SessionStore
from shared.api_keys import KeyScope

HERE = Path(__file__).parent
STATIC = StaticFiles(directory=HERE / "static")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; media-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_TEMPLATES = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True))

router = APIRouter(prefix="/console", include_in_schema=False)


def secure_headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


def render(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(_TEMPLATES.get_template(name).render(**context), status_code, headers=secure_headers())


def _current(request: Request) -> tuple[Session, KeyScope] | None:
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    sessions: SessionStore = request.app.state.sessions
    resolver: KeyResolver = request.app.state.key_resolver
    session = sessions.get(token)
    if session is None:
        return None
    scope = resolver.resolve_session(session.kind, session.ref)
    return None if scope is None else (session, scope)


def _page(request: Request, name: str, page: str, **context: Any) -> Response:
    current = _current(request)
    if current is None:
        return RedirectResponse("/console/login", status_code=303, headers=secure_headers())
    session, scope = current
    tenants = "every tenant" if scope.all_tenants else ", ".join(sorted(scope.tenants))  # type: ignore[arg-type]
    roles = " ".join(sorted(role.value for role in scope.roles))
    return render(name, csrf=session.csrf, page=page, tenants=tenants, roles=roles, **context)


@router.get("")
def console_root() -> Response:
    return RedirectResponse("/console/review", status_code=303, headers=secure_headers())


def _login_form(request: Request, status_code: int = 200, error: str | None = None) -> Response:
    """The sign-in page with a new pre-session (`producers.http.sessions`): its token in an
    httpOnly, SameSite=Strict cookie only sent back to ``/console/login``, its CSRF token in
    the form."""
    pre_sessions: SessionStore = request.app.state.login_sessions
    token, pre = pre_sessions.open("login", "")
    response = render("login.html", status_code, page="login", error=error, csrf=pre.csrf)
    # With no-referrer a browser sends "Origin: null" even to ourselves; same-origin keeps
    # the form's origin checkable and still tells other sites nothing.
    response.headers["Referrer-Policy"] = "same-origin"
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=int(pre_sessions.idle_s),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/console/login",
    )
    return response


def _same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another origin (``Origin``;
    ``null`` counts as another; a client that sends none is left to the pre-session's
    token)."""
    origin = request.headers.get("origin")
    return origin is None or origin == f"{request.url.scheme}://{request.url.netloc}"


def _login_allowed(request: Request, csrf: str) -> bool:
    """The sign-in POST came from our own sign-in form: same origin, with the pre-session
    cookie and that pre-session's CSRF token. The pre-session is used up either way."""
    token = request.cookies.get(LOGIN_COOKIE)
    if not token:
        return False
    pre_sessions: SessionStore = request.app.state.login_sessions
    pre = pre_sessions.get(token)
    pre_sessions.close(token)
    return pre is not None and pre.kind == "login" and pre.csrf_matches(csrf) and _same_origin(request)


@router.get("/login")
def login_page(request: Request) -> Response:
    return _login_form(request)


@router.post("/login")
async def login(
    request: Request,
    key: Annotated[str, Form(max_length=512)],
    csrf: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    if not await run_in_threadpool(_login_allowed, request, csrf):
        # Another site's form (login CSRF), or a sign-in page left open past LOGIN_TTL_S.
        error = "This sign-in did not come from this console's own form (or it expired): try again."
        return await run_in_threadpool(_login_form, request, 403, error)
    resolver: KeyResolver = request.app.state.key_resolver
    signed = await run_in_threadpool(resolver.sign_in, key.strip())
    if signed is None:
        return await run_in_threadpool(_login_form, request, 401, "That key is not valid.")
    kind, ref, _scope = signed
    sessions: SessionStore = request.app.state.sessions
    token, _ = await run_in_threadpool(sessions.open, kind, ref)
    response = RedirectResponse("/console/review", status_code=303, headers=secure_headers())
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    response.delete_cookie(LOGIN_COOKIE, path="/console/login")
    return response


@router.post("/logout")
async def logout(request: Request, csrf: Annotated[str, Form(max_length=200)]) -> Response:
    current = await run_in_threadpool(_current, request)
    if current is not None and current[0].csrf_matches(csrf):
        sessions: SessionStore = request.app.state.sessions
        await run_in_threadpool(sessions.close, request.cookies[COOKIE])
    response = RedirectResponse("/console/login", status_code=303, headers=secure_headers())
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/review")
def review_page(request: Request) -> Response:
    return _page(request, "review.html", "review")


@router.get("/search")
def search_page(request: Request) -> Response:
    return _page(request, "search.html", "search")


@router.get("/uploads/{upload_id}")
def upload_page(request: Request, upload_id: str) -> Response:
    return _page(request, "upload.html", "upload", upload_id=upload_id)
