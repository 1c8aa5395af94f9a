"""The review console in a real browser: Playwright driving Debian's chromium against the
API (uvicorn) in front of a real pipeline (redis-server, cpu/gpu/index Celery workers with
the tiny model, LanceDB, the local object store).

Uploads are flagged deterministically by listing their bytes in the blocklist first (the
random model's own scores are kept under the review band by the calm policy). With
``OMNIBIND_CONSOLE_SCREENSHOTS=DIR`` the tests save a screenshot of each page to DIR
(docs/console/ holds the ones docs/console.md shows).
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.api_keys import Role
from shared.events import Modality
from shared.moderation.blocklist import Blocklist, BlocklistEntry, entry_id_for
from shared.moderation.log import DecisionLog
from tests.http.conftest import API_KEY
from tests.http.test_review_api import calm_policy, png
from tests.support.api_stack import ApiStack, api_stack
from tests.support.media import video_bytes
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WAV = (ROOT / "producers" / "samples" / "tone-440hz.wav").read_bytes()
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
HOSTILE_TEXT = b'<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2"> a hostile caption'
HOSTILE_NAME = "<img src=x onerror=window.__xss=3>.txt"
# Words a speech model could be made to write (Whisper writes whatever text it hears).
HOSTILE_SPEECH = '<script>window.__xss = 4</script><img src=x onerror="window.__xss = 5"> said the caller'
SPEECH = ROOT / "tests" / "fixtures" / "speech"
THREAT = (SPEECH / "threat.wav").read_bytes()  # espeak-ng: "... kill you tomorrow ..."
CALM = (SPEECH / "calm.wav").read_bytes()
CLIP = video_bytes(seconds=3, fps=10, width=96, height=48)  # 2:1
BROKEN_CLIP = video_bytes(seconds=2, fps=10, width=64, height=48)  # its stored file turns hostile
ROLES = frozenset({Role.INGEST, Role.READ, Role.SEARCH, Role.MODERATE})


def chromium_path() -> str:
    """Debian's chromium (`make browser` installs it), or skip — fail under CI=true."""
    for candidate in (os.environ.get("OMNIBIND_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if candidate and Path(candidate).exists():
            return candidate
    found = shutil.which("chromium")
    if found:
        return found
    reason = "no chromium: run `make browser` (apt-get install chromium) for the console's browser tests"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@dataclass
class Console(ApiStack):
    acme: str  # keys
    beta: str
    acme_key_id: str
    shots: Path | None


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[Console]:
    root = tmp_path_factory.mktemp("console")
    with api_stack(root, model_cache, API_KEY, moderation={"policy": calm_policy(root / "policy.toml")}) as running:
        acme_key_id, acme = running.new_key("acme", ROLES)
        shots = os.environ.get("OMNIBIND_CONSOLE_SCREENSHOTS")
        console = Console(
            **running.as_fields(),
            acme=acme,
            beta=running.new_key("beta", ROLES)[1],
            acme_key_id=acme_key_id,
            shots=Path(shots) if shots else None,
        )
        _seed(console)
        yield console


def _seed(console: Console) -> None:
    """acme: four flagged images, a flagged hostile text file, a flagged audio file, a clean
    image and a broken one (failed), and (newest) two flagged recordings of speech (real
    Whisper transcripts) and a flagged video; beta: one flagged image of its own."""
    blocklist = Blocklist(console.client.redis, console.client.settings.queue_prefix)
    flagged = [png(n) for n in range(4)] + [HOSTILE_TEXT, WAV, png(200), CALM, THREAT, CLIP, BROKEN_CLIP]
    categories = ["violence", "weapons", "violence", "gore", "harassment", "violence", "hate_symbols"]
    for data, category in zip(flagged, [*categories, "harassment", "violence", "violence", "gore"], strict=True):
        sha = hashlib.sha256(data).hexdigest()
        blocklist.add(BlocklistEntry(id=entry_id_for(sha), category=category, sha256=sha, modality=Modality.IMAGE))
    uploads = [
        (console.acme, "clean.png", png(100), "clean"),
        (console.acme, "broken.png", png(9)[:120], "broken"),
        (console.acme, "tone.wav", WAV, "tone"),
        (console.acme, HOSTILE_NAME, HOSTILE_TEXT, "hostile"),
        *[(console.acme, f"photo-{n}.png", png(n), f"photo-{n}") for n in range(4)],
        (console.beta, "beta.png", png(200), "beta-photo"),
        (console.acme, "call.wav", CALM, "said"),
        (console.acme, "threat.wav", THREAT, "spoken"),
        (console.acme, "broken-clip.mp4", BROKEN_CLIP, "broken-clip"),
        (console.acme, "clip.mp4", CLIP, "clip"),
    ]
    for key, name, data, upload_id in uploads:
        console.upload(key, name, data, upload_id)
    _make_transcript_hostile(console, "acme:said")
    stored = console.client.status("acme:broken-clip")
    assert stored is not None and stored.object is not None
    # Bytes that still sniff as MP4 but hold no video: the poster cannot be made.
    console.client.objects.put(stored.object.bucket, stored.object.key, BROKEN_CLIP[:32] + bytes(range(256)) * 40)


def _make_transcript_hostile(console: Console, upload_id: str) -> None:
    """Whisper wrote the recording's transcript; its words become markup, as a hostile
    recording (or a model that hears things) could make them: every segment's text and the
    whole text (the status record's ``transcript``, as the index stage stores it)."""
    key = f"{console.client.settings.queue_prefix}:upload:{upload_id}"
    stored = console.client.redis.hget(key, "x:transcript")
    assert stored is not None, f"{upload_id} has no transcript"
    transcript = json.loads(stored)
    assert transcript["segments"], transcript  # a real transcript to start from
    for segment in transcript["segments"]:
        segment["text"] = HOSTILE_SPEECH
    transcript["text"] = " ".join(s["text"] for s in transcript["segments"])
    console.client.redis.hset(key, "x:transcript", json.dumps(transcript))


@pytest.fixture
def browser(console: Console) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def signed_in(browser: Any, console: Console, key: str) -> Any:
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.on("dialog", lambda dialog: pytest.fail(f"a dialog opened: {dialog.message}"))
    page.goto(f"{console.url}/console")
    assert page.url.endswith("/console/login")
    page.fill("#key", key)
    page.click("#sign-in")
    page.wait_for_url("**/console/review")
    return page


def shot(console: Console, page: Any, name: str) -> None:
    if console.shots is not None:
        console.shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(console.shots / f"{name}.png"), full_page=False)


def cards(page: Any) -> list[str]:
    page.wait_for_selector("article.card, p.empty")
    return [str(card.get_attribute("data-id")) for card in page.query_selector_all("article.card")]


def test_sign_in_sets_an_httponly_strict_cookie_and_bad_keys_are_refused(browser: Any, console: Console) -> None:
    page = browser.new_page()
    page.goto(f"{console.url}/console/login")
    shot(console, page, "login")
    page.fill("#key", "not-a-key")
    page.click("#sign-in")
    assert "That key is not valid." in page.inner_text("main")
    page = signed_in(browser, console, console.acme)
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "omnibind_session"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # the script cannot read it
    csp = page.request.get(f"{console.url}/console/review").headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    # A state change with the cookie but without the session's CSRF token is refused.
    forged = page.request.post(f"{console.url}/v1/uploads/clean/decision", data={"action": "approve"})
    assert forged.status == 403 and forged.json()["reason"] == "csrf_failed"


def test_the_queue_shows_thumbnails_of_real_uploads_and_inert_hostile_text(browser: Any, console: Console) -> None:
    page = signed_in(browser, console, console.acme)
    shown = cards(page)
    assert {"acme:photo-0", "acme:photo-3", "acme:hostile", "acme:tone"} <= set(shown)
    assert "acme:clean" not in shown and "acme:broken" not in shown
    assert shown.index("acme:photo-3") < shown.index("acme:photo-0")  # newest first
    thumb = page.wait_for_selector('article.card[data-id="acme:photo-0"] img.thumb')
    wait_until(
        lambda: thumb.evaluate("img => img.complete && img.naturalWidth > 0"),
        timeout_s=30,
        what="the thumbnail to load",
        poll_s=0.1,
    )
    assert thumb.evaluate("img => img.naturalWidth") == 240  # a 240x120 picture: within 256, not enlarged
    assert page.query_selector('article.card[data-id="acme:tone"] audio') is not None
    hostile = page.query_selector('article.card[data-id="acme:hostile"]')
    wait_until(
        lambda: "hostile caption" in hostile.inner_text(), timeout_s=30, what="the text excerpt to load", poll_s=0.1
    )
    assert "<script>window.__xss = 1</script>" in hostile.inner_text()  # shown as text, not run
    assert hostile.query_selector("script, img[src='x']") is None
    page.wait_for_selector('article.card[data-id="acme:photo-0"] ul.signals li')
    assert "blocklist" in page.inner_text('article.card[data-id="acme:photo-0"] ul.signals')
    page.goto(f"{console.url}/console/uploads/acme:hostile")
    page.wait_for_selector("#decision p")
    assert page.evaluate("window.__xss") is None


def test_a_video_card_shows_a_poster_the_server_made_with_a_player(browser: Any, console: Console) -> None:
    page = signed_in(browser, console, console.acme)
    cards(page)
    video = page.wait_for_selector('article.card[data-id="acme:clip"] video')
    poster = str(video.get_attribute("poster"))
    assert poster == "/v1/uploads/acme%3Aclip/thumbnail?size=256"
    assert video.get_attribute("src") == "/v1/uploads/acme%3Aclip/media" and video.get_attribute("controls") is not None
    size = page.evaluate(
        """src => new Promise(done => {
          const image = new Image();
          image.onload = () => done([image.naturalWidth, image.naturalHeight]);
          image.onerror = () => done(null);
          image.src = src;
        })""",
        poster,
    )
    assert size == [96, 48]  # the video's own size: within 256, not enlarged
    reply = page.request.get(console.url + poster)
    assert reply.headers["content-type"] == "image/jpeg" and reply.body()[:3] == b"\xff\xd8\xff"
    assert page.request.get(f"{console.url}/v1/uploads/acme:clip/media").headers["content-type"] == "video/mp4"
    # A video whose poster cannot be made: a placeholder, not an empty player.
    placeholder = page.wait_for_selector('article.card[data-id="acme:broken-clip"] p.no-preview')
    assert "cannot be decoded" in placeholder.inner_text()
    assert page.query_selector('article.card[data-id="acme:broken-clip"] video') is None


def test_cards_and_the_upload_page_show_transcripts_as_text(browser: Any, console: Console) -> None:
    page = signed_in(browser, console, console.acme)
    cards(page)
    spoken = page.wait_for_selector('article.card[data-id="acme:spoken"] p.transcript')
    assert "kill you tomorrow" in spoken.inner_text().lower()  # what Whisper heard in the fixture
    said = page.wait_for_selector('article.card[data-id="acme:said"] p.transcript')
    assert "<script>window.__xss = 4</script>" in said.inner_text()  # shown as text
    assert page.query_selector("article.card script, article.card img[src='x']") is None
    assert page.query_selector('article.card[data-id="acme:photo-0"] p.transcript') is None  # images say nothing
    page.wait_for_selector('article.card[data-id="acme:clip"] video')
    shot(console, page, "review-queue")
    page.goto(f"{console.url}/console/uploads/acme:spoken")
    first = page.wait_for_selector("#segments li")
    assert first.query_selector(".at").inner_text().startswith("0:00")
    assert "kill you tomorrow" in page.inner_text("#segments").lower()
    assert "en" in page.inner_text("#transcript-meta") and "tiny.en" in page.inner_text("#transcript-meta")
    page.wait_for_selector("#decision p")
    shot(console, page, "upload-transcript")
    page.goto(f"{console.url}/console/uploads/acme:said")
    page.wait_for_selector("#segments li")
    assert "<img src=x onerror=" in page.inner_text("#segments")
    assert page.query_selector("#segments script, #segments img") is None
    page.wait_for_selector("#decision p")
    assert page.evaluate("window.__xss") is None
    # A search by the words said finds the recording through its transcript, quoting them.
    spoken_status = console.client.status("acme:spoken")
    assert spoken_status is not None and isinstance(spoken_status.extra["transcript"], dict)
    words = str(spoken_status.extra["transcript"]["text"])
    page.goto(f"{console.url}/console/search")
    page.fill("#search-text", words)
    page.click("#search-form button[type=submit]")
    tile = page.wait_for_selector('#results a.tile[data-id="acme:spoken"] .detail')
    assert tile.inner_text().startswith("transcript: said") and "kill you tomorrow" in tile.inner_text().lower()


class _AttackerSite(http.server.BaseHTTPRequestHandler):
    """Another site's page: a form that signs the visitor in to the console with the
    attacker's key, submitted as soon as it loads."""

    page = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_sign_in_from_another_site_is_refused(browser: Any, console: Console) -> None:
    form = (
        f'<form method="post" action="{console.url}/console/login">'
        f'<input name="key" value="{console.beta}"><input name="csrf" value="a guess"></form>'
        "<script>document.forms[0].submit()</script>"
    )
    handler = type("Attacker", (_AttackerSite,), {"page": form.encode()})
    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    try:
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{console.url}/console/login")  # the moderator has the sign-in page open
        # "localhost" is another site than the console's 127.0.0.1 (SameSite cookies stay home).
        page.goto(f"http://localhost:{site.server_address[1]}/")
        page.wait_for_url(f"{console.url}/console/login")
        assert "did not come from this console" in page.inner_text("main")
        assert not [c for c in context.cookies() if c["name"] == "omnibind_session"]
        assert page.request.get(f"{console.url}/v1/review").status == 401
    finally:
        site.shutdown()
        site.server_close()
    # Without the sign-in page's pre-session (a script elsewhere), or with it but from
    # another origin, a valid key is refused too.
    with httpx.Client(base_url=console.url) as plain:
        bare = plain.post("/console/login", data={"key": console.acme})
        assert bare.status_code == 403 and "omnibind_session" not in bare.cookies
        form_page = plain.get("/console/login")
        token = form_page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        foreign = plain.post(
            "/console/login", data={"key": console.acme, "csrf": token}, headers={"Origin": "http://localhost:1"}
        )
        assert foreign.status_code == 403 and "omnibind_session" not in foreign.cookies
        plain.get("/console/login")
        replayed = plain.post("/console/login", data={"key": console.acme, "csrf": token})  # an old form's token
        assert replayed.status_code == 403 and "omnibind_session" not in replayed.cookies
        fresh = plain.get("/console/login")
        token = fresh.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        own = plain.post("/console/login", data={"key": console.acme, "csrf": token}, headers={"Origin": console.url})
        assert own.status_code == 303 and "omnibind_session" in own.cookies


def test_approve_and_block_round_trip_into_the_decision_log_and_blocklist(browser: Any, console: Console) -> None:
    page = signed_in(browser, console, console.acme)
    cards(page)
    page.click('article.card[data-id="acme:photo-1"] button[data-act="approve"]')
    page.wait_for_selector('article.card.decided-approve[data-id="acme:photo-1"]')
    page.click('article.card[data-id="acme:photo-2"] button[data-act="block"]')
    page.wait_for_selector('article.card.decided-block[data-id="acme:photo-2"]')
    log = DecisionLog(console.client.redis, console.client.settings.queue_prefix)
    approved = log.newest(upload_id="acme:photo-1")[0]
    blocked = log.newest(upload_id="acme:photo-2")[0]
    assert (approved.source, approved.reviewer, approved.decision.flagged) == (
        "human",
        f"key:{console.acme_key_id}",
        False,
    )
    assert (blocked.source, blocked.decision.action.value, blocked.decision.categories[0]) == (
        "human",
        "block",
        "violence",
    )
    vector = console.client.vectors.get("acme:photo-2")
    assert vector is not None and vector.sha256 is not None
    entry = Blocklist(console.client.redis, console.client.settings.queue_prefix).get(
        entry_id_for(vector.sha256, "acme")
    )
    assert entry is not None and entry.category == "violence" and entry.checkpoint == vector.checkpoint
    page.reload()
    assert not {"acme:photo-1", "acme:photo-2"} & set(cards(page))  # decided: out of the queue
    # The decisions are labels: precision/recall of the policy per category (photo-2 blocked
    # under violence; photo-1 approved).
    row = page.wait_for_selector('#accuracy tr[data-category="violence"]')
    assert row.inner_text().split("\t")[:4] == ["violence", "image", "1", "1"]
    row.scroll_into_view_if_needed()
    shot(console, page, "review-accuracy")


def test_keyboard_triage_moves_with_j_k_and_decides_with_a_b_e(browser: Any, console: Console) -> None:
    page = signed_in(browser, console, console.acme)
    shown = cards(page)
    current = lambda: page.get_attribute("article.card.current", "data-id")  # noqa: E731
    assert current() == shown[0]
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("k")
    assert current() == shown[1]
    page.keyboard.press("e")
    page.wait_for_selector(f'article.card.decided-escalate[data-id="{shown[1]}"]')
    assert current() == shown[2]  # moved on to the next card
    page.keyboard.press("x")
    assert page.inner_text("#selected-count") == "1 selected"
    page.keyboard.press("a")  # acts on the selection
    page.wait_for_selector(f'article.card.decided-approve[data-id="{shown[2]}"]')
    log = DecisionLog(console.client.redis, console.client.settings.queue_prefix)
    assert log.newest(upload_id=shown[1])[0].decision.action.value == "review"  # escalated: stays in review
    assert log.newest(upload_id=shown[2])[0].decision.flagged is False


def test_search_by_text_and_by_a_dropped_image(browser: Any, console: Console) -> None:
    page = signed_in(browser, console, console.acme)
    page.goto(f"{console.url}/console/search")
    page.fill("#search-text", "a photo")
    page.click("#search-form button[type=submit]")
    page.wait_for_selector("#results a.tile")
    by_text = [t.get_attribute("data-id") for t in page.query_selector_all("#results a.tile")]
    assert by_text and all(str(i).startswith("acme:") for i in by_text)
    data = base64.b64encode(png(3)).decode()
    page.evaluate("document.getElementById('results').replaceChildren()")  # only the drop's hits from here
    page.evaluate(
        """data => {
          const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
          const transfer = new DataTransfer();
          transfer.items.add(new File([bytes], "query.png", {type: "image/png"}));
          document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true}));
        }""",
        data,
    )
    # (wait_for_function evaluates a string in the page: the console's CSP forbids that)
    top = page.wait_for_selector('#results a.tile[data-id="acme:photo-3"]')
    # The same picture; the tiny random model puts every noise picture near it too.
    assert float(top.query_selector(".score").inner_text()) > 0.999
    hits = [t.get_attribute("data-id") for t in page.query_selector_all("#results a.tile")]
    assert all(str(i).startswith("acme:") for i in hits)
    wait_until(
        lambda: top.query_selector("img").evaluate("i => i.naturalWidth > 0"),
        timeout_s=30,
        what="a thumbnail in the results",
        poll_s=0.1,
    )
    shot(console, page, "search")
    top.click()
    page.wait_for_url("**/console/uploads/acme%3Aphoto-3")
    page.wait_for_selector("#timeline li.status-indexed")
    page.wait_for_selector("table.signals-table tr.band-block")
    page.wait_for_selector("#similar a.tile")
    shot(console, page, "upload")


def test_a_failed_upload_shows_its_reason_and_can_be_retried(browser: Any, console: Console) -> None:
    page = signed_in(browser, console, console.acme)
    page.goto(f"{console.url}/console/uploads/broken")
    page.wait_for_selector("#failure p.error")
    assert "corrupt_image" in page.inner_text("#failure")
    shot(console, page, "upload-failed")
    page.click("#retry")

    def retried() -> bool:
        record = console.client.status("acme:broken")
        return record is not None and record.run >= 2 and record.terminal

    wait_until(retried, timeout_s=120, what="the retry to run", poll_s=0.2)


def test_a_second_tenants_key_sees_none_of_the_firsts_uploads(browser: Any, console: Console) -> None:
    page = signed_in(browser, console, console.beta)
    assert cards(page) == ["beta:beta-photo"]
    page.goto(f"{console.url}/console/search")
    page.fill("#search-text", "a photo")
    page.click("#search-form button[type=submit]")
    page.wait_for_selector("#results a.tile")
    assert {t.get_attribute("data-id") for t in page.query_selector_all("#results a.tile")} == {"beta:beta-photo"}
    page.goto(f"{console.url}/console/uploads/acme:photo-0")
    wait_until(
        lambda: "upload_not_found" in page.inner_text("#upload-title"),
        timeout_s=30,
        what="a 404 on another tenant's upload",
        poll_s=0.1,
    )
    assert page.query_selector("#media img") is None
    thumb = page.request.get(f"{console.url}/v1/uploads/acme:photo-0/thumbnail")
    assert thumb.status == 404


def test_signing_out_ends_the_session(browser: Any, console: Console) -> None:
    page = signed_in(browser, console, console.acme)
    page.click("form.logout button")
    page.wait_for_url("**/console/login")
    assert page.request.get(f"{console.url}/v1/review").status == 401
    page.goto(f"{console.url}/console/review")
    assert page.url.endswith("/console/login")
