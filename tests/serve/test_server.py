"""The live avatar server through a real WebSocket client on loopback: the
protocol, frames identical to offline, admission, barge-in, slow clients,
security and metrics. Every loop here is bounded in count and time."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest
from _server_fixtures import RATE, in_process

websockets_sync = pytest.importorskip("websockets.sync.client")

import synctalk_fast as stf  # noqa: E402
from synctalk_fast import cli  # noqa: E402
from synctalk_fast.demo import synthetic_speech  # noqa: E402
from synctalk_fast.engine.options import OPTION_NAMES, EngineOptions  # noqa: E402
from synctalk_fast.serve import AvatarSpec, Limits, check_binding, load_config  # noqa: E402

TIMEOUT = 60.0  # seconds any one exchange may take, at most


@pytest.fixture(scope="module")
def speech():
    wav = synthetic_speech(1.0)
    return wav, (np.clip(wav, -1, 1) * 32767).astype("<i2")


@pytest.fixture(scope="module")
def offline(server, speech):
    """What offline generation makes of the speech (as int16 PCM, as sent)."""
    avatar = server.avatars["ann"]
    pipe = stf.Pipeline(avatar.engine)
    audio = speech[1].astype(np.float32) / 32768.0
    feats = pipe.audio_features(audio)
    return list(pipe.frames(feats, avatar.template))


def connect(running, name="ann", query=""):
    return websockets_sync.connect(
        f"ws://{running.base}/v1/avatars/{name}/stream{query}", max_size=None, open_timeout=10, close_timeout=5
    )


def send_speech(ws, pcm: np.ndarray, *, chunk: int = 320) -> None:
    for i in range(0, len(pcm), chunk):
        ws.send(pcm[i : i + chunk].tobytes())


def collect(ws, *, until_close: bool = True, limit_s: float = TIMEOUT) -> list:
    """Messages until the server closes (or ``limit_s``): frame headers paired with their bytes."""
    from websockets.exceptions import ConnectionClosed

    out = []
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            msg = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        except (ConnectionClosed, TimeoutError):
            break
        msg = json.loads(msg)
        if msg["type"] == "frame":
            msg["data"] = ws.recv(timeout=10)
        out.append(msg)
        if not until_close and msg["type"] == "utterance_end":
            break
    return out


def decode(msg) -> np.ndarray:
    if msg["format"] == "raw":
        return np.frombuffer(msg["data"], np.uint8).reshape(msg["height"], msg["width"], 3)
    return cv2.imdecode(np.frombuffer(msg["data"], np.uint8), cv2.IMREAD_COLOR)


def talk(running, speech, fmt: str, **start) -> list:
    with connect(running) as ws:
        ws.send(json.dumps({"type": "start", "sample_rate": RATE, "channels": 1, "format": fmt, **start}))
        send_speech(ws, speech[1])
        ws.send(json.dumps({"type": "flush"}))
        ws.send(json.dumps({"type": "close"}))
        return collect(ws)


@pytest.mark.parametrize("fmt", ["png", "raw"])
def test_lossless_frames_equal_offline_and_the_utterance_ends(running, speech, offline, fmt):
    msgs = talk(running, speech, fmt)
    frames = [m for m in msgs if m["type"] == "frame"]
    assert [m["index"] for m in frames] == list(range(len(offline)))
    assert all(m["utterance"] == 0 and not m["idle"] and not m["skipped"] and m["format"] == fmt for m in frames)
    assert frames[1]["time"] == pytest.approx(0.04)
    assert (frames[0]["width"], frames[0]["height"]) == (320, 240)
    for m, want in zip(frames, offline):
        np.testing.assert_array_equal(decode(m), want)
    assert msgs[-1] == {"type": "utterance_end", "utterance": 0, "frames": len(offline)}


def test_jpeg_frames_and_stereo_44k_input(running, speech, offline):
    import soxr

    wav = soxr.resample(speech[0], RATE, 44100)
    stereo = (np.stack([wav, wav], axis=1) * 32767).astype("<i2").reshape(-1)
    with connect(running) as ws:
        ws.send(json.dumps({"type": "start", "sample_rate": 44100, "channels": 2, "format": "jpeg"}))
        send_speech(ws, stereo, chunk=3001)  # odd sizes: samples cut between messages
        ws.send(json.dumps({"type": "flush"}))
        ws.send(json.dumps({"type": "close"}))
        msgs = collect(ws)
    frames = [m for m in msgs if m["type"] == "frame"]
    assert abs(len(frames) - len(offline)) <= 1
    err = np.mean([np.abs(decode(m).astype(int) - w).mean() for m, w in zip(frames, offline)])
    assert err < 4


@pytest.mark.slow
def test_two_sessions_at_once_each_get_the_offline_frames(running, speech, offline):
    results = {}

    def client(k):
        results[k] = talk(running, speech, "png")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    for k in range(2):
        frames = [m for m in results[k] if m["type"] == "frame"]
        assert len(frames) == len(offline)
        assert all(np.array_equal(decode(m), w) for m, w in zip(frames, offline))


def close_code(ws) -> int | None:
    collect(ws, limit_s=10)
    return ws.close_code


@pytest.mark.parametrize(
    "first, code",
    [
        ("not json", "bad_request"),
        (json.dumps({"type": "flush"}), "bad_request"),
        (json.dumps({"type": "start", "format": "gif"}), "bad_request"),
        (json.dumps({"type": "start", "sample_rate": 100}), "bad_request"),
        (json.dumps({"type": "start", "colour": "red"}), "bad_request"),
    ],
)
def test_a_bad_start_is_an_error_then_close_1008(running, first, code):
    with connect(running) as ws:
        ws.send(first)
        msg = json.loads(ws.recv(timeout=10))
        assert msg["type"] == "error" and msg["code"] == code and msg["message"]
        assert close_code(ws) == 1008


def test_unknown_avatar_and_bad_token_are_refused(running, server):
    with connect(running, name="bob") as ws:
        msg = json.loads(ws.recv(timeout=10))
        assert (msg["code"], close_code(ws)) == ("unknown_avatar", 1008)
        assert "ann" in msg["message"]
    server.token = "s3cret-token"
    with connect(running, query="?token=wrong") as ws:
        assert json.loads(ws.recv(timeout=10))["code"] == "unauthorized"
        assert close_code(ws) == 1008
    with connect(running, query="?token=s3cret-token") as ws:
        ws.send(json.dumps({"type": "start", "format": "raw"}))
        ws.send(json.dumps({"type": "close"}))
        assert close_code(ws) == 1000
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://{running.base}/metrics", timeout=10)
    assert info.value.code == 401


def test_a_browser_from_another_origin_is_refused(running):
    ws = websockets_sync.connect(
        f"ws://{running.base}/v1/avatars/ann/stream", origin="http://evil.example", open_timeout=10
    )
    with ws:
        assert json.loads(ws.recv(timeout=10))["code"] == "forbidden_origin"
        assert close_code(ws) == 1008


def test_the_next_session_is_refused_at_once_when_full(running, server):
    assert server.capacity == 2
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(connect(running)) for _ in range(2)]
        for ws in held:
            ws.send(json.dumps({"type": "start", "format": "raw"}))
        deadline = time.monotonic() + 10
        while server.active_sessions < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        t0 = time.monotonic()
        with connect(running) as ws:
            msg = json.loads(ws.recv(timeout=10))
            assert msg["code"] == "server_full" and "2 of 2" in msg["message"]
            assert close_code(ws) == 1013
        assert time.monotonic() - t0 < 5
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://{running.base}/v1/avatars/ann", timeout=10)
        assert info.value.code == 503
    deadline = time.monotonic() + 10
    while server.active_sessions and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.active_sessions == 0
    status = json.loads(urllib.request.urlopen(f"http://{running.base}/v1/avatars/ann", timeout=10).read())
    assert status == {"sessions": 0, "capacity": 2}


def test_barge_in_drops_the_rest_of_the_utterance(running, speech, offline):
    long = np.concatenate([speech[1]] * 3)
    with connect(running) as ws:
        ws.send(json.dumps({"type": "start", "format": "raw"}))
        send_speech(ws, long)
        first = json.loads(ws.recv(timeout=TIMEOUT))
        assert first["type"] == "frame" and first["utterance"] == 0
        ws.recv(timeout=10)
        ws.send(json.dumps({"type": "interrupt"}))
        send_speech(ws, speech[1])
        ws.send(json.dumps({"type": "flush"}))
        ws.send(json.dumps({"type": "close"}))
        msgs = collect(ws)
    frames = [m for m in msgs if m["type"] == "frame"]
    old = [m for m in frames if m["utterance"] == 0]
    new = [m for m in frames if m["utterance"] == 1]
    assert len(old) <= 4  # only what was already on its way
    n = len(offline)
    assert len(new) == n and msgs[-1] == {"type": "utterance_end", "utterance": 1, "frames": n}
    indexes = [m["index"] for m in frames]
    assert indexes == sorted(indexes) and len(set(indexes)) == len(indexes)


class StalledClient:
    """A WebSocket client that speaks, then never reads (a small receive buffer,
    the protocol driven by hand with websockets' sans-I/O client)."""

    def __init__(self, running, messages: list):
        import socket

        from websockets.client import ClientProtocol
        from websockets.uri import parse_uri

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", running.port))
        proto = ClientProtocol(parse_uri(f"ws://{running.base}/v1/avatars/ann/stream"))
        proto.send_request(proto.connect())
        self.sock.sendall(b"".join(proto.data_to_send()))
        while proto.handshake_exc is None and not proto.events_received() and proto.state.name == "CONNECTING":
            proto.receive_data(self.sock.recv(4096))
        assert proto.state.name == "OPEN"
        for m in messages:
            proto.send_binary(m) if isinstance(m, bytes) else proto.send_text(m.encode())
            self.sock.sendall(b"".join(proto.data_to_send()))

    def close(self) -> None:
        self.sock.close()


@pytest.mark.slow
def test_a_stalled_client_loses_frames_but_never_delays_another(running, server, speech, offline):
    server.limits = Limits(send_queue=2)
    long = np.concatenate([speech[1]] * 4)
    start = json.dumps({"type": "start", "format": "raw"})
    stalled = StalledClient(
        running,
        [start] + [long[i : i + 8000].tobytes() for i in range(0, len(long), 8000)] + [json.dumps({"type": "flush"})],
    )
    try:
        t0 = time.monotonic()
        msgs = talk(running, speech, "png")
        assert time.monotonic() - t0 < TIMEOUT
        frames = [m for m in msgs if m["type"] == "frame"]
        assert len(frames) == len(offline)
        assert all(np.array_equal(decode(m), w) for m, w in zip(frames, offline))
        deadline = time.monotonic() + TIMEOUT
        dropped = []
        while time.monotonic() < deadline:  # the stalled session's stream runs on, dropping what it cannot send
            metrics = urllib.request.urlopen(f"http://{running.base}/metrics", timeout=10).read().decode()
            dropped = [
                float(line.split()[-1])
                for line in metrics.splitlines()
                if line.startswith('synctalk_frames_dropped_total{avatar="ann"}')
            ]
            if dropped and dropped[0] > 0:
                break
            time.sleep(0.2)
        assert dropped and dropped[0] > 0
    finally:
        stalled.close()
    deadline = time.monotonic() + 20
    while server.active_sessions and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.active_sessions == 0


def test_audio_faster_than_the_limit_is_refused(running, server, speech):
    server.limits = Limits(max_audio_rate=2.0, audio_burst=1.0)
    with connect(running) as ws:
        ws.send(json.dumps({"type": "start", "format": "raw"}))
        send_speech(ws, np.concatenate([speech[1]] * 3), chunk=8000)
        msgs = collect(ws, limit_s=20)
        assert any(m["type"] == "error" and m["code"] == "rate_limited" for m in msgs)
        assert ws.close_code == 1008


def test_idle_frames_flow_while_nobody_speaks(running, server):
    server.limits = Limits(idle_seconds=30)
    with connect(running) as ws:
        ws.send(json.dumps({"type": "start", "format": "raw", "idle": True}))
        for k in range(2):
            header = json.loads(ws.recv(timeout=10))
            assert header["type"] == "frame" and header["idle"] and header["utterance"] == -1
            assert header["index"] == k and len(ws.recv(timeout=10)) == 320 * 240 * 3
        ws.send(json.dumps({"type": "close"}))


def test_listing_health_and_metrics(running, speech):
    talk(running, speech, "raw")
    avatars = json.loads(urllib.request.urlopen(f"http://{running.base}/v1/avatars", timeout=10).read())
    assert avatars == [{"name": "ann", "width": 320, "height": 240, "frames": 12, "fps": 25}]
    health = json.loads(urllib.request.urlopen(f"http://{running.base}/healthz", timeout=10).read())
    assert health["status"] == "ok" and health["capacity"] == 2
    metrics = urllib.request.urlopen(f"http://{running.base}/metrics", timeout=10).read().decode()
    assert 'synctalk_frames_sent_total{avatar="ann"}' in metrics
    assert "synctalk_capacity_sessions 2.0" in metrics
    assert "synctalk_frame_delay_seconds_count" in metrics


def test_binding_beyond_loopback_needs_a_token(model_dir, tpl_dir, capsys):
    for host in ("127.0.0.1", "localhost", "::1", "[::1]"):
        check_binding(host, token=None)
    check_binding("0.0.0.0", token="t")
    check_binding("0.0.0.0", token=None, insecure=True)
    with pytest.raises(ValueError, match="needs a token"):
        check_binding("0.0.0.0", token=None)
    rc = cli.main(["serve", "--avatar", f"ann={tpl_dir}:{model_dir / 'unet_328.onnx'}", "--host", "0.0.0.0"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--token-file" in err


def test_config_file_and_avatar_spelling(tmp_path):
    assert AvatarSpec.parse("may=data/May:models/may.onnx") == AvatarSpec(
        "may", tmp_path.__class__("data/May"), tmp_path.__class__("models/may.onnx")
    )
    with pytest.raises(ValueError, match="NAME=TEMPLATE_DIR:UNET.onnx"):
        AvatarSpec.parse("may")
    conf = tmp_path / "avatars.toml"
    conf.write_text(
        'audio_encoder = "m/enc.onnx"\nport = 9000\n[[avatar]]\nname = "may"\ntemplate = "t/May"\nunet = "m/may.onnx"\n'
    )
    data = load_config(conf)
    assert data.avatars == [AvatarSpec("may", tmp_path / "t/May", tmp_path / "m/may.onnx")]
    assert data.audio_encoder == tmp_path / "m/enc.onnx" and data.port == 9000
    assert (data.host, data.max_clients, data.token_file, data.insecure, data.allowed_origins) == (
        None,
        None,
        None,
        None,
        [],
    )
    assert data.options == EngineOptions() and data.engine_keys == frozenset()
    assert data["avatars"] == data.avatars and data["port"] == 9000  # the old dict form
    conf.write_text('colour = "red"\n')
    with pytest.raises(ValueError, match="unknown key") as info:
        load_config(conf)
    assert "\n" not in str(info.value) and "max_clients" in str(info.value) and "cache_mb" in str(info.value)


def test_config_file_takes_every_engine_option_and_max_clients(tmp_path):
    conf = tmp_path / "avatars.toml"
    conf.write_text(
        'runtime = "onnxruntime"\nproviders = ["cpu"]\ndevice_id = 1\nprecision = "fp16"\n'
        "batch_size = 2\nsessions = 3\nthreads = 1\ncache_mb = 64\nmax_clients = 5\n"
        'token_file = "tok"\ninsecure = true\nallowed_origins = ["http://a.example"]\nhost = "::1"\n'
    )
    data = load_config(conf)
    assert data.engine_keys == set(OPTION_NAMES)  # every EngineOptions field is a key
    assert data.options == EngineOptions(
        runtime="onnxruntime",
        providers=("cpu",),
        device_id=1,
        precision="fp16",
        batch_size=2,
        sessions=3,
        threads=1,
        cache_mb=64,
    )
    assert (data.max_clients, data.token_file, data.insecure, data.host) == (5, tmp_path / "tok", True, "::1")
    assert data.allowed_origins == ["http://a.example"]
    conf.write_text("max_sessions = 3\n")
    with pytest.warns(DeprecationWarning, match="max_clients"):
        assert load_config(conf).max_clients == 3
    for bad in ("max_clients = 0", 'max_clients = "lots"', 'port = "80"', "batch_size = 0", 'precision = "fp8"'):
        conf.write_text(bad + "\n")
        with pytest.raises(ValueError) as info:
            load_config(conf)
        assert "\n" not in str(info.value) and str(conf) in str(info.value), bad


def test_the_old_module_paths_keep_working():
    from synctalk_fast import server, webrtc
    from synctalk_fast.serve import AvatarServer, VoiceGate

    assert server.AvatarServer is AvatarServer and webrtc.VoiceGate is VoiceGate
    assert server.CLOSE_CODES["server_full"] == 1013 and set(server.FORMATS) == {"jpeg", "png", "raw"}


def test_refusals_have_one_table_and_one_message():
    from synctalk_fast.serve.protocol import CLOSE_CODES, REFUSALS, Refusal, error_message

    assert CLOSE_CODES == {
        "bad_request": 1008,
        "unauthorized": 1008,
        "unknown_avatar": 1008,
        "forbidden_origin": 1008,
        "rate_limited": 1008,
        "idle_timeout": 1008,
        "session_too_long": 1008,
        "server_full": 1013,
        "internal": 1011,
        "too_large": 1009,
        "unavailable": 1011,
    }
    assert {c: REFUSALS[c].http for c in ("unauthorized", "forbidden_origin", "unknown_avatar", "server_full")} == {
        "unauthorized": 401,
        "forbidden_origin": 403,
        "unknown_avatar": 404,
        "server_full": 503,
    }
    r = Refusal("server_full", "full")
    assert (
        r.to_message()
        == error_message("server_full", "full")
        == {"type": "error", "code": "server_full", "message": "full"}
    )
    assert (r.close_code, r.http_status) == (1013, 503)
    assert Refusal.internal(RuntimeError("a\n  b" + "x" * 400)).message.startswith("a bx")
    assert len(Refusal.internal(RuntimeError("x" * 400)).message) == 300
    with pytest.raises(ValueError):
        Refusal("no_such_code", "?")


def test_auto_capacity_is_measured_and_at_least_one(server):
    capacity = server.measure_capacity(seconds=0.5)
    assert isinstance(capacity, int) and capacity >= 1


def test_sessions_whole_path_is_measured_with_real_streams(server):
    """Two streams on the avatar's engine, frames encoded as JPEG: frames counted, threads gone."""
    import threading

    from synctalk_fast.serve.admission import session_frames_per_second

    avatar = server.avatars["ann"]
    fps = session_frames_per_second(avatar.engine, avatar.template, 2, seconds=0.5)
    assert fps > 0
    assert not [t for t in threading.enumerate() if t.name.startswith("synctalk-capacity")]


def test_auto_capacity_is_the_whole_paths_within_the_unets(server, monkeypatch):
    """The U-Net alone bounds it; the sessions' whole path decides it (with the real-time margin)."""
    from synctalk_fast.models.timing import realtime_streams
    from synctalk_fast.serve import admission

    asked = []
    monkeypatch.setattr(admission, "unet_capacity", lambda engine, seconds: (4, 200.0))

    def whole(engine, template, sessions, **kwargs):
        asked.append(sessions)
        return 60.0

    monkeypatch.setattr(admission, "session_frames_per_second", whole)
    assert server.measure_capacity(seconds=0.1) == min(4, realtime_streams(60.0, 25)) and asked == [4]
    monkeypatch.setattr(admission, "session_frames_per_second", lambda *a, **k: 1000.0)
    assert server.measure_capacity(seconds=0.1) == 4


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


@pytest.fixture
def server_process(model_dir, tpl_dir):
    """The server in a process of its own, one client at a time (``_server_fixtures.in_process``)."""
    with in_process(model_dir, tpl_dir, {"max_audio_rate": 8.0, "audio_burst": 30.0}) as running:
        yield running


@pytest.mark.slow
@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="reads /proc")
def test_a_long_session_keeps_going_in_flat_memory(server_process, speech):
    """Utterances back to back in one session, the server in a process of
    its own: after a warm-up of two utterances, its memory over ten more
    grows by less than 2 MB an utterance (least-squares slope); every
    utterance completes. Bounded: twelve utterances, a minute each at most."""
    warmup, measured = 2, 10
    sizes, rss = [], []
    t0 = time.monotonic()
    with connect(server_process) as ws:
        ws.send(json.dumps({"type": "start", "format": "jpeg"}))
        for k in range(warmup + measured):
            send_speech(ws, speech[1], chunk=1600)
            ws.send(json.dumps({"type": "flush"}))
            msgs = collect(ws, until_close=False, limit_s=TIMEOUT)
            assert msgs and msgs[-1]["type"] == "utterance_end" and msgs[-1]["utterance"] == k
            sizes.append(msgs[-1]["frames"])
            if k >= warmup:
                rss.append(_rss_mb(server_process.pid))
            assert time.monotonic() - t0 < 10 * TIMEOUT
        ws.send(json.dumps({"type": "close"}))
    assert len(set(sizes)) == 1
    slope = np.polyfit(np.arange(len(rss)), rss, 1)[0]
    assert slope < 2.0, (slope, rss)
    assert max(rss) - rss[0] < 50, rss


def test_every_engine_option_reaches_every_avatar(model_dir, tpl_dir):
    """The engine options (all EngineOptions fields) reach each avatar's engine and template;
    max_sessions= is the former name of max_clients= (client connections), sessions= stays U-Net sessions."""
    from synctalk_fast.serve import AvatarServer

    unet, encoder = model_dir / "unet_328.onnx", model_dir / "audio_encoder.onnx"
    specs = [AvatarSpec("ann", tpl_dir, unet), AvatarSpec("bob", tpl_dir, unet)]
    with pytest.warns(DeprecationWarning, match="max_clients"):
        s = AvatarServer(
            specs,
            encoder,
            options=EngineOptions(batch_size=3, threads=2),
            max_sessions=3,
            runtime="onnxruntime",
            providers=["cpu"],
            device_id=1,
            precision="fp32",
            batch_size=2,
            sessions=1,
            threads=1,
            cache_mb=0.5,
        )
    assert s.capacity == 3 and s.options.batch_size == 2 and s.options.threads == 1
    for avatar in s.avatars.values():
        e = avatar.engine
        assert (e.runtime, e.providers, e.device_id, e.precision) == (
            "onnxruntime",
            ["CPUExecutionProvider"],
            1,
            "fp32",
        )
        assert (e.batch_size, len(e.sessions), e.sessions[0].threads, e.options.cache_mb) == (2, 1, 1, 0.5)
        assert avatar.template.cache.capacity == 2  # 0.5 MiB of 320x240 frames
    with pytest.raises(TypeError, match="both"), pytest.warns(DeprecationWarning):
        AvatarServer(specs, encoder, max_sessions=2, max_clients=2)
    with pytest.raises(TypeError, match="colour"):
        AvatarServer(specs, encoder, max_clients=1, colour="red")
    with pytest.raises(ValueError, match="max_clients"):
        AvatarServer(specs, encoder, max_clients=0)


def test_webrtc_offers_are_refused_with_the_table_s_status_and_release_their_seat(running, server):
    """The WebRTC endpoint refuses with the one error message and the code's HTTP status (no
    connection is made: every offer here is refused before ICE)."""
    pytest.importorskip("aiortc")

    def post(body: bytes, query: str = "", name: str = "ann") -> tuple[int, dict]:
        req = urllib.request.Request(
            f"http://{running.base}/v1/avatars/{name}/webrtc{query}",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    no_audio = json.dumps({"type": "offer", "sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"}).encode()
    server.limits = Limits(max_message_bytes=4096)
    cases = [
        (b"not json", "", "ann", 400, "bad_request"),
        (b"x" * 5000, "", "ann", 413, "too_large"),
        (no_audio, "", "bob", 404, "unknown_avatar"),
        (no_audio, "", "ann", 400, "bad_request"),
    ]
    for body, query, name, status, code in cases:
        got, msg = post(body, query, name)
        assert (got, msg["type"], msg["code"], msg["error"]) == (status, "error", code, code), msg
        assert msg["message"]
    server.token = "s3cret-token"
    got, msg = post(no_audio, "?token=wrong")
    assert (got, msg["code"]) == (401, "unauthorized")
    assert server.active_sessions == 0 and not server.webrtc_sessions
    metrics = server.metrics.render().decode()
    assert 'synctalk_sessions_total{avatar="ann",outcome="too_large"} 1.0' in metrics
