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

# The shared server fixtures (imported by name; skips without the server's extras).
from _server_fixtures import RATE, fresh_limits, running, server, tpl_dir  # noqa: F401

websockets_sync = pytest.importorskip("websockets.sync.client")

import synctalk_fast as stf  # noqa: E402
from synctalk_fast import cli  # noqa: E402
from synctalk_fast.demo import synthetic_speech  # noqa: E402
from synctalk_fast.server import AvatarSpec, Limits, check_binding, load_config  # noqa: E402

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
    return websockets_sync.connect(f"ws://{running.base}/v1/avatars/{name}/stream{query}", max_size=None,
                                   open_timeout=10, close_timeout=5)


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


@pytest.mark.parametrize("first, code", [
    ("not json", "bad_request"),
    (json.dumps({"type": "flush"}), "bad_request"),
    (json.dumps({"type": "start", "format": "gif"}), "bad_request"),
    (json.dumps({"type": "start", "sample_rate": 100}), "bad_request"),
    (json.dumps({"type": "start", "colour": "red"}), "bad_request"),
])
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
    ws = websockets_sync.connect(f"ws://{running.base}/v1/avatars/ann/stream", origin="http://evil.example",
                                 open_timeout=10)
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
    stalled = StalledClient(running, [start] + [long[i : i + 8000].tobytes() for i in range(0, len(long), 8000)]
                            + [json.dumps({"type": "flush"})])
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
            dropped = [float(line.split()[-1]) for line in metrics.splitlines()
                       if line.startswith('synctalk_frames_dropped_total{avatar="ann"}')]
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
    assert AvatarSpec.parse("may=data/May:models/may.onnx") == AvatarSpec("may", tmp_path.__class__("data/May"),
                                                                          tmp_path.__class__("models/may.onnx"))
    with pytest.raises(ValueError, match="NAME=TEMPLATE_DIR:UNET.onnx"):
        AvatarSpec.parse("may")
    conf = tmp_path / "avatars.toml"
    conf.write_text('audio_encoder = "m/enc.onnx"\nport = 9000\n[[avatar]]\nname = "may"\ntemplate = "t/May"\n'
                    'unet = "m/may.onnx"\n')
    data = load_config(conf)
    assert data["avatars"] == [AvatarSpec("may", tmp_path / "t/May", tmp_path / "m/may.onnx")]
    assert data["audio_encoder"] == tmp_path / "m/enc.onnx" and data["port"] == 9000
    conf.write_text('colour = "red"\n')
    with pytest.raises(ValueError, match="unknown key"):
        load_config(conf)


def test_auto_capacity_is_measured_and_at_least_one(server):
    capacity = server.measure_capacity(seconds=0.5)
    assert isinstance(capacity, int) and capacity >= 1


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


@pytest.mark.slow
@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="reads /proc")
def test_a_long_session_keeps_going_in_flat_memory(running, server, speech):
    """Eight utterances back to back in one session (bounded: about a minute):
    every utterance completes, and memory after the last few is what it was
    after the first few."""
    server.limits = Limits(max_audio_rate=8.0, audio_burst=30.0)
    sizes, rss = [], []
    with connect(running) as ws:
        ws.send(json.dumps({"type": "start", "format": "jpeg"}))
        for k in range(8):
            send_speech(ws, speech[1], chunk=1600)
            ws.send(json.dumps({"type": "flush"}))
            msgs = collect(ws, until_close=False, limit_s=TIMEOUT)
            assert msgs and msgs[-1]["type"] == "utterance_end" and msgs[-1]["utterance"] == k
            sizes.append(msgs[-1]["frames"])
            rss.append(_rss_mb())
        ws.send(json.dumps({"type": "close"}))
    assert len(set(sizes)) == 1
    assert rss[-1] - rss[2] < 50, rss
