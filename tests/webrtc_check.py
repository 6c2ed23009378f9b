"""Run inside a network namespace with only loopback (see test_webrtc.py):
an AvatarServer and an aiortc client that speaks a WAV file into it over
WebRTC. Prints one JSON line with what the client and the server saw."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import aioice.ice
import numpy as np
import soundfile as sf

# Host candidates on loopback only: the namespace has nothing else, and no
# check may leave this machine.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []

from synctalk_fast import models  # noqa: E402
from synctalk_fast.demo import synthetic_speech, synthetic_template  # noqa: E402
from synctalk_fast.server import AvatarServer, AvatarSpec  # noqa: E402


def main(work: Path, seconds: float) -> dict:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for kind, name in (("unet", "unet.onnx"), ("audio_encoder", "enc.onnx")):
        models.export_onnx(models.random_state_dict(kind), work / name, kind=kind)
    tpl = synthetic_template(work / "ann", frames=12, width=320, height=240)
    speech = np.concatenate([np.zeros(8000, np.float32), synthetic_speech(1.5), np.zeros(24000, np.float32)])
    sf.write(work / "speech.wav", speech, 16000, subtype="PCM_16")
    server = AvatarServer([AvatarSpec("ann", tpl, work / "unet.onnx")], work / "enc.onnx", max_sessions=1,
                          sessions=2, threads=1)
    import uvicorn

    uv = uvicorn.Server(uvicorn.Config(server.app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    base = f"http://127.0.0.1:{uv.servers[0].sockets[0].getsockname()[1]}"
    result = asyncio.run(client(base, work / "speech.wav", seconds, server))
    uv.should_exit = True
    thread.join(15)
    result["active_after"] = server.active_sessions
    return result


def post(url: str, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


async def client(base: str, wav: Path, seconds: float, server: AvatarServer) -> dict:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaPlayer

    loop = asyncio.get_running_loop()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no STUN server: loopback only
    player = MediaPlayer(str(wav))
    pc.addTrack(player.audio)
    pc.addTransceiver("video", direction="recvonly")
    channel = pc.createDataChannel("control")
    got: dict = {}

    @pc.on("track")
    def on_track(track):
        got[track.kind] = track

    await pc.setLocalDescription(await pc.createOffer())
    offer = json.dumps({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}).encode()
    status, answer = await loop.run_in_executor(None, post, f"{base}/v1/avatars/ann/webrtc", offer)
    assert status == 200, answer
    full_status, full = await loop.run_in_executor(None, post, f"{base}/v1/avatars/ann/webrtc", offer)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
    deadline = time.monotonic() + 20
    while "video" not in got and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    sizes, times, audio_frames = set(), [], 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        frame = await asyncio.wait_for(got["video"].recv(), 10)
        sizes.add((frame.width, frame.height))
        times.append(time.monotonic())
    if "audio" in got:
        for _ in range(5):
            await asyncio.wait_for(got["audio"].recv(), 10)
            audio_frames += 1
    session = next(iter(server._rtc))
    channel.send(json.dumps({"type": "interrupt"}))
    await asyncio.sleep(0.3)
    result = {"video_frames": len(times), "sizes": sorted(sizes), "audio_frames": audio_frames,
              "fps": (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0,
              "server_frames": session.frames_sent, "lipsync_frames": session.lipsync_frames,
              "second_offer_status": full_status, "second_offer_code": full.get("code"),
              "interrupts": session.stream.stats()["interrupts"]}
    await pc.close()
    await player.audio.stop() if asyncio.iscoroutinefunction(player.audio.stop) else player.audio.stop()
    deadline = time.monotonic() + 10
    while server.active_sessions and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return result


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), float(sys.argv[2]))), flush=True)
    os._exit(0)  # daemon threads (uvicorn, engine workers, the media player) end with the process
