"""The browser page at ``/`` in a real headless Chromium (Debian's ``chromium``
driven by Playwright, no browser download): pick an avatar, play a WAV file
through the WebSocket protocol (frames on the canvas, drawn against the Web
Audio clock), barge-in, the token and ``?wav=``, the microphone over the
WebSocket (a fake capture device playing a WAV) and over WebRTC (the server
and the browser in a loopback-only network namespace: this file run as a
script there).

Everything runs on loopback; every wait is bounded. Skips with the reason when
Playwright or a system Chromium is missing (CI: ``apt-get install chromium``,
``pip install playwright``; never ``playwright install``).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import wave
from pathlib import Path

import numpy as np
import pytest

if __name__ == "__main__":  # run as a script in a network namespace (see the end): tests/ has helpers
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _server_fixtures import RATE, H, Running, W, make_server  # noqa: E402
from helpers import needs_loopback_namespace  # noqa: E402

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="pip install playwright (the browser is Debian's chromium)"
)

import synctalk_fast as stf  # noqa: E402
from synctalk_fast.demo import synthetic_speech  # noqa: E402

CHROMIUM = os.environ.get("SYNCTALK_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM:
    pytest.skip("no system Chromium (apt-get install chromium)", allow_module_level=True)

WAIT_MS = 60_000  # the longest any one wait in the page may take
FLAGS = [
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--no-first-run",
    "--no-default-browser-check",
]


def write_wav(path: Path, seconds: float, seed: int = 0) -> np.ndarray:
    """16 kHz mono int16 speech-like audio; returns the samples written."""
    pcm = (np.clip(synthetic_speech(seconds, seed=seed), -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())
    return pcm


# -- the audio (the server: _server_fixtures) ---------------------------------------------------------
@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    d = tmp_path_factory.mktemp("wav")
    for name, seconds, seed in (("short", 0.5, 0), ("tiny", 0.3, 3), ("long", 3.0, 1), ("mic", 2.0, 2)):
        write_wav(d / f"{name}.wav", seconds, seed=seed)
    return {name: d / f"{name}.wav" for name in ("short", "tiny", "long", "mic")}


# -- the browser -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def playwright():
    pw = sync_api.sync_playwright().start()
    yield pw
    pw.stop()


def launch(playwright, executable: str, *extra: str):
    try:
        return playwright.chromium.launch(executable_path=executable, args=[*FLAGS, *extra], timeout=60_000)
    except sync_api.Error as exc:  # present but broken: a failure, not a skip
        pytest.fail(f"{executable} does not start under Playwright: {str(exc).splitlines()[0]}")


@pytest.fixture(scope="module")
def browser(playwright, wavs):
    b = launch(playwright, CHROMIUM, f"--use-file-for-fake-audio-capture={wavs['mic']}")
    yield b
    b.close()


def watched(pg):
    """The page, its errors and console errors gathered in ``pg.problems``."""
    pg.problems = []
    pg.on("pageerror", lambda exc: pg.problems.append(f"page error: {exc}"))
    pg.on("console", lambda m: m.type == "error" and pg.problems.append(f"console: {m.text}"))
    return pg


@pytest.fixture
def page(browser, tmp_path):
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    pg = watched(context.new_page())
    yield pg
    try:
        pg.screenshot(path=str(tmp_path / "page.png"))
        print("screenshot:", tmp_path / "page.png")
    finally:
        context.close()


def st(pg) -> dict:
    return pg.evaluate("JSON.parse(JSON.stringify(window.synctalk))")


def wait(pg, expression: str, timeout_ms: int = WAIT_MS) -> None:
    try:
        pg.wait_for_function(expression, timeout=timeout_ms)
    except sync_api.TimeoutError:
        raise AssertionError(
            f"{expression} within {timeout_ms} ms; state: {st(pg)}; "
            f"error line: {pg.inner_text('#error')!r}; problems: {pg.problems}"
        ) from None


def open_page(pg, running, query: str = "") -> None:
    pg.goto(f"http://{running.base}/{query}", timeout=30_000)
    wait(pg, "window.synctalk && window.synctalk.ready", 30_000)


def load_wav(pg, path: Path) -> None:
    pg.set_input_files("#file", str(path))
    wait(pg, f"window.synctalk.loaded && window.synctalk.loaded.name === {json.dumps(path.name)}", 30_000)


def canvas_rgb(pg) -> np.ndarray:
    w, h, data = pg.evaluate("""() => {
        const c = document.getElementById('canvas');
        const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let s = '';
        for (let i = 0; i < px.length; i += 0x8000) s += String.fromCharCode.apply(null, px.subarray(i, i + 0x8000));
        return [c.width, c.height, btoa(s)];
    }""")
    return np.frombuffer(base64.b64decode(data), np.uint8).reshape(h, w, 4)[..., :3]


def assert_shows_the_avatar(rgb: np.ndarray, template: stf.Template, index: int, *, mouth: bool = True) -> None:
    """The canvas holds stream frame ``index``: its template frame (RGB, JPEG-close) outside the mouth
    box, a generated mouth inside it (``mouth``: a frame skipped to catch up is the template's own)."""
    k = int(template.order(index + 1)[-1])
    want = template.frame(k)[..., ::-1].astype(int)
    x0, y0, x1, y1 = template.box(k)
    outside = np.ones(rgb.shape[:2], bool)
    outside[max(0, y0 - 4) : y1 + 4, max(0, x0 - 4) : x1 + 4] = False
    diff = np.abs(rgb.astype(int) - want).mean(axis=2)
    assert rgb.std() > 10 and diff[outside].mean() < 4, diff[outside].mean()
    if mouth:
        assert diff[y0:y1, x0:x1].mean() > 4  # the U-Net's mouth, not the template's


def no_errors(pg, *, refused: int | None = None) -> None:
    """No error shown, none in the console (but the browser's own line for an HTTP ``refused`` on purpose)."""
    s = st(pg)
    assert s["errors"] == 0 and pg.inner_text("#error") == "", (s["lastError"], pg.inner_text("#error"))
    assert [p for p in pg.problems if refused is None or f"status of {refused}" not in p] == []


# -- tests ---------------------------------------------------------------------------------------------
def test_play_a_wav_file_every_frame_drawn_with_its_audio(page, running, server, wavs):
    open_page(page, running)
    assert page.eval_on_selector_all("#avatar option", "os => os.map(o => o.value)") == ["ann"]
    assert "320×240" in page.inner_text("#avatar-info")
    load_wav(page, wavs["short"])
    page.click("#play")
    wait(page, "window.synctalk.utteranceEnds >= 1")
    s = st(page)
    n = s["utterances"][0]["frames"]
    assert abs(n - 25 * 0.5) <= 2
    assert s["utterances"] == [{"utterance": 0, "frames": n, "drawn": n, "received": n}]
    assert s["framesDrawn"] == s["framesReceived"] == n and s["staleFrames"] == 0
    assert s["lastFrame"] == {
        "index": n - 1,
        "time": pytest.approx((n - 1) * 0.04),
        "utterance": 0,
        "width": W,
        "height": H,
    }
    # the speech played through Web Audio, each frame drawn against its clock, never before its audio
    assert s["audioStarts"] == 1 and s["audio"] == "running"
    assert s["sync"]["scheduled"] == n and s["sync"]["maxEarlyMs"] <= 10
    assert s["chunksSent"] == 25 and s["audioSentSeconds"] == pytest.approx(0.5)
    assert s["fps"] > 0 and s["latencyMs"] > 0 and s["firstFrameMs"] > 0
    status = page.inner_text("#status")
    assert "frames/s" in status and "latency" in status and f"{n} drawn" in status
    # the canvas has the avatar's size and shows the last frame
    rgb = canvas_rgb(page)
    assert rgb.shape == (H, W, 3)
    assert_shows_the_avatar(rgb, server.avatars["ann"].template, n - 1)
    no_errors(page)
    wait(page, "window.synctalk.mode === null", 15_000)  # all said: the page closed the session
    assert st(page)["sessionsOpened"] == 1


def test_interrupt_drops_the_rest_and_the_session_goes_on(page, running, wavs):
    open_page(page, running)
    load_wav(page, wavs["long"])
    page.click("#play")
    wait(page, "window.synctalk.framesDrawn >= 2")
    drawn = page.evaluate("() => { document.getElementById('interrupt').click(); return window.synctalk.framesDrawn; }")
    time.sleep(0.6)  # frames of the dropped speech still on their way are not shown
    s = st(page)
    assert s["framesDrawn"] == drawn and s["utteranceEnds"] == 0 and s["mode"] == "wav"
    assert s["audioSentSeconds"] < 3.0
    load_wav(page, wavs["short"])
    page.click("#play")  # barge-in: the next utterance in the same session
    wait(page, "window.synctalk.utteranceEnds >= 1")
    s = st(page)
    n = s["utterances"][0]["frames"]
    assert abs(n - 25 * 0.5) <= 2
    assert s["utterances"] == [{"utterance": 1, "frames": n, "drawn": n, "received": n}]
    assert s["lastFrame"]["utterance"] == 1 and s["sessionsOpened"] == 1
    no_errors(page)


def test_token_is_forwarded_and_wav_url_plays_at_once(page, running, server, wavs):
    server.token = "s3cret-token"
    page.goto(f"http://{running.base}/", timeout=30_000)
    wait(page, "document.getElementById('error').textContent.includes('unauthorized')", 30_000)
    data = "data:audio/wav;base64," + base64.b64encode(wavs["tiny"].read_bytes()).decode()
    query = "?" + urllib.parse.urlencode({"token": server.token, "avatar": "ann", "wav": data})
    page.goto(f"http://{running.base}/{query}", timeout=30_000)
    wait(page, "window.synctalk.utteranceEnds >= 1")
    s = st(page)
    u = s["utterances"][0]
    assert u["frames"] == u["drawn"] == s["framesDrawn"] and abs(u["frames"] - 25 * 0.3) <= 2
    no_errors(page, refused=401)


def test_microphone_over_the_websocket_when_the_server_has_no_webrtc(page, running, server):
    offers = []

    def no_webrtc(route):  # what a server without aiortc answers
        offers.append(route.request.post_data_json)
        route.fulfill(
            status=501,
            content_type="application/json",
            body=json.dumps({"type": "error", "code": "unavailable", "message": "WebRTC needs aiortc"}),
        )

    page.route("**/v1/avatars/*/webrtc*", no_webrtc)
    open_page(page, running)
    page.click("#talk")
    wait(page, "window.synctalk.audioSentSeconds >= 0.5")
    assert page.inner_text("#talk") == "Stop talking" and st(page)["mode"] == "mic-ws"
    assert len(offers) == 1 and offers[0]["type"] == "offer"
    page.click("#talk")  # the end of the utterance: its frames come, then the page closes the session
    wait(page, "window.synctalk.utteranceEnds >= 1 && window.synctalk.mode === null")
    s = st(page)
    u = s["utterances"][0]
    assert u["frames"] == u["drawn"] == s["framesDrawn"] > 0
    assert abs(u["frames"] - 25 * s["audioSentSeconds"]) <= 3
    assert s["sync"]["scheduled"] == 0  # live: shown as they come
    # live: past 1 s behind (max_lag) a slow server sends template frames to catch up
    assert_shows_the_avatar(canvas_rgb(page), server.avatars["ann"].template, s["lastFrame"]["index"], mouth=False)
    no_errors(page, refused=501)


@needs_loopback_namespace
@pytest.mark.slow
def test_microphone_over_webrtc_with_the_server(model_dir, tpl_dir, wavs, tmp_path):
    """The Talk button against the server's WebRTC endpoint: server and browser in a network namespace
    with only loopback (this file run as a script there), so no ICE check or STUN lookup leaves the machine."""
    proc = subprocess.run(
        [
            "unshare",
            "-n",
            sys.executable,
            __file__,
            "--webrtc-check",
            str(tmp_path),
            str(model_dir),
            str(tpl_dir),
            str(wavs["mic"]),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if "skip" in result:
        pytest.skip(result["skip"])
    offer = result["offer"]
    assert offer["query"] == "token=s3cret" and offer["content_type"].startswith("application/json")
    assert offer["keys"] == ["sdp", "type"] and offer["type"] == "offer"
    assert offer["kinds"] == ["audio", "video", "application"]  # the mic, recvonly video, data channel
    assert offer["video_recvonly"] and offer["audio_sends"]
    assert result["video"] == {
        "width": W,
        "height": H,
        "kinds": ["audio", "video"],
        "shown": True,
        "canvas_hidden": True,
    }
    state = result["state"]
    assert state["mode"] == "webrtc" and state["webrtc"]["framesShown"] >= 25 and state["webrtc"]["fps"] > 0
    assert result["lipsync_frames"] > 0  # the fake microphone's speech drove the avatar
    assert result["interrupts"] == 1  # Interrupt went over the data channel
    assert result["active_after_stop"] == 0 and result["stopped"] == {"state": "closed", "canvas_shown": True}
    assert "frames/s" in result["status"] and result["errors"] == 0 and result["problems"] == []


def _webrtc_check(work: Path, model_dir: Path, tpl: Path, mic: Path) -> dict:
    """Inside ``unshare -n``: the server with a token, Chromium, Talk, Interrupt, Stop."""
    subprocess.run([shutil.which("ip") or "/sbin/ip", "link", "set", "lo", "up"], check=True)
    try:
        import aioice.ice
    except ImportError:
        return {"skip": "the server's WebRTC part (aiortc) is not installed"}
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []
    server = make_server(model_dir, tpl, max_clients=1, token="s3cret")
    running = Running(server)
    url = f"http://{running.base}/v1/avatars/ann/webrtc?token=s3cret"
    probe = urllib.request.Request(url, data=b"{}", headers={"Content-Type": "application/json"}, method="POST")
    try:
        urllib.request.urlopen(probe, timeout=30).close()
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 405, 501):
            return {"skip": f"the server has no WebRTC endpoint (POST .../webrtc: HTTP {exc.code})"}

    def until(check, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} within {seconds} s")
            time.sleep(0.05)

    result: dict = {}
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM, args=[*FLAGS, f"--use-file-for-fake-audio-capture={mic}"], timeout=60_000
        )
        pg = watched(b.new_page())
        posts = []

        def record(route):
            posts.append(
                (route.request.url, route.request.headers.get("content-type", ""), route.request.post_data_json)
            )
            route.continue_()

        pg.route("**/v1/avatars/*/webrtc*", record)
        pg.goto(f"http://{running.base}/?token=s3cret", timeout=30_000)
        wait(pg, "window.synctalk && window.synctalk.ready", 30_000)
        pg.click("#talk")
        wait(pg, "window.synctalk.webrtc.framesShown >= 25")
        [(post_url, ctype, body)] = posts
        sections = body["sdp"].split("\r\nm=")[1:]
        result["offer"] = {
            "query": urllib.parse.urlsplit(post_url).query,
            "content_type": ctype,
            "keys": sorted(body),
            "type": body["type"],
            "kinds": [x.split(" ", 1)[0] for x in sections],
            "audio_sends": any(d in sections[0] for d in ("a=sendrecv", "a=sendonly")),
            "video_recvonly": "a=recvonly" in sections[1],
        }
        result["video"] = pg.evaluate("""() => {
            const v = document.getElementById('video');
            return {width: v.videoWidth, height: v.videoHeight, shown: !v.hidden,
                    kinds: v.srcObject ? v.srcObject.getTracks().map((t) => t.kind).sort() : [],
                    canvas_hidden: document.getElementById('canvas').hidden};
        }""")
        session = next(iter(server.webrtc_sessions))
        until(lambda: session.lipsync_frames > 0, 30, "lip-synced frames")
        result["lipsync_frames"] = session.lipsync_frames
        pg.screenshot(path=str(work / "webrtc.png"))
        pg.click("#interrupt")
        until(lambda: session.stream.stats()["interrupts"] >= 1, 10, "the interrupt")
        result["interrupts"] = session.stream.stats()["interrupts"]
        result["state"] = st(pg)
        result["status"] = pg.inner_text("#status")
        pg.click("#stop")
        until(lambda: server.active_sessions == 0, 15, "the session's end")
        result["active_after_stop"] = server.active_sessions
        result["stopped"] = pg.evaluate(
            "({state: window.synctalk.webrtc.state, canvas_shown: !document.getElementById('canvas').hidden})"
        )
        result["errors"] = st(pg)["errors"]
        result["problems"] = pg.problems
        b.close()
    running.stop()
    return result


if __name__ == "__main__" and sys.argv[1:2] == ["--webrtc-check"]:
    print(json.dumps(_webrtc_check(*map(Path, sys.argv[2:6]))), flush=True)
    os._exit(0)  # daemon threads (uvicorn, engine workers) end with the process
