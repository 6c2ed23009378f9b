"""Run inside a network namespace with only loopback (see test_webrtc.py):
an AvatarServer and aiortc clients that speak into it over WebRTC. Prints
one JSON line with what the clients and the server saw.

``webrtc_check.py talk WORK MODEL_DIR TEMPLATE_DIR SECONDS``: a peer speaks
a WAV file, gets the avatar's video and audio back, interrupts; a second
offer is refused while the first session is open.

``webrtc_check.py limits WORK MODEL_DIR TEMPLATE_DIR``: the server's limits
over WebRTC: a peer that sends no microphone audio is ended after
``idle_seconds``; a peer whose microphone is faster than ``max_audio_rate``
is ended (``rate_limited``); each session's seat is released.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aioice.ice
import numpy as np
import soundfile as sf

# Host candidates on loopback only: the namespace has nothing else, and no
# check may leave this machine.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []

sys.path.insert(0, str(Path(__file__).parent))

from _server_fixtures import Running, make_server  # noqa: E402

from synctalk_fast.demo import synthetic_speech  # noqa: E402
from synctalk_fast.serve import AvatarServer, Limits  # noqa: E402


def post(url: str, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def write_speech(path: Path, seconds: float) -> Path:
    speech = np.concatenate([np.zeros(8000, np.float32), synthetic_speech(seconds), np.zeros(24000, np.float32)])
    sf.write(path, speech, 16000, subtype="PCM_16")
    return path


class Peer:
    """An aiortc client: a microphone (a WAV file, or an audio transceiver that sends nothing),
    a recvonly video transceiver, a data channel whose messages it keeps."""

    def __init__(self, wav: Path | None):
        from aiortc import RTCConfiguration, RTCPeerConnection
        from aiortc.contrib.media import MediaPlayer

        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no STUN server: loopback only
        self.player = MediaPlayer(str(wav)) if wav is not None else None
        if self.player is not None:
            self.pc.addTrack(self.player.audio)
        else:
            self.pc.addTransceiver("audio", direction="sendrecv")  # a microphone that says nothing
        self.pc.addTransceiver("video", direction="recvonly")
        self.channel = self.pc.createDataChannel("control")
        self.messages: list[dict] = []
        self.channel.on("message", lambda m: self.messages.append(json.loads(m)))
        self.tracks: dict[str, Any] = {}
        self.pc.on("track", lambda track: self.tracks.__setitem__(track.kind, track))

    async def connect(self, url: str) -> tuple[int, dict]:
        from aiortc import RTCSessionDescription

        await self.pc.setLocalDescription(await self.pc.createOffer())
        self.offer = json.dumps({"sdp": self.pc.localDescription.sdp, "type": self.pc.localDescription.type}).encode()
        status, answer = await asyncio.get_running_loop().run_in_executor(None, post, url, self.offer)
        if status == 200:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        return status, answer

    async def close(self) -> None:
        await self.pc.close()
        if self.player is not None and self.player.audio is not None:
            stop = self.player.audio.stop()
            if asyncio.iscoroutine(stop):
                await stop


async def until(check, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def talk(base: str, wav: Path, seconds: float, server: AvatarServer) -> dict:
    url = f"{base}/v1/avatars/ann/webrtc"
    peer = Peer(wav)
    status, answer = await peer.connect(url)
    assert status == 200, answer
    full_status, full = await asyncio.get_running_loop().run_in_executor(None, post, url, peer.offer)
    await until(lambda: "video" in peer.tracks, 20)
    sizes, times, audio_frames = set(), [], 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        frame = await asyncio.wait_for(peer.tracks["video"].recv(), 30)  # a loaded machine: frames wait for compute
        sizes.add((frame.width, frame.height))
        times.append(time.monotonic())
    if "audio" in peer.tracks:
        for _ in range(5):
            await asyncio.wait_for(peer.tracks["audio"].recv(), 10)
            audio_frames += 1
    session = next(iter(server.webrtc_sessions))
    peer.channel.send(json.dumps({"type": "interrupt"}))
    await asyncio.sleep(0.3)
    result = {
        "video_frames": len(times),
        "sizes": sorted(sizes),
        "audio_frames": audio_frames,
        "fps": (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0,
        "server_frames": session.frames_sent,
        "lipsync_frames": session.lipsync_frames,
        "second_offer_status": full_status,
        "second_offer_code": full.get("code"),
        "interrupts": session.stream.stats()["interrupts"],
    }
    await peer.close()
    await until(lambda: server.active_sessions == 0, 10)
    return result


async def one_limited_session(base: str, server: AvatarServer, wav: Path | None, limits: Limits) -> dict:
    """A session under ``limits``: how long it lasted, why it ended, what the peer was told."""
    server.limits = limits
    peer = Peer(wav)
    t0 = time.monotonic()
    status, answer = await peer.connect(f"{base}/v1/avatars/ann/webrtc")
    assert status == 200, answer
    session = next(iter(server.webrtc_sessions))
    # Ended: its seat released and the session itself closed (its peer connection too).
    ended = await until(lambda: server.active_sessions == 0 and not server.webrtc_sessions, 20)
    # The refusal left before the server closed; the peer's stack may still be delivering it.
    await until(lambda: any(m.get("type") == "error" for m in peer.messages), 5)
    out = {
        "ended": ended,
        "seconds": round(time.monotonic() - t0, 2),
        "refusal": session.refusal.code if session.refusal else None,
        "sessions_left": len(server.webrtc_sessions),
        "told": [m.get("code") for m in peer.messages if m.get("type") == "error"],
    }
    await peer.close()
    return out


def outcomes(server: AvatarServer) -> dict[str, float]:
    """The sessions' outcome counters of the avatar ``ann``."""
    text = server.metrics.render().decode()
    prefix = 'synctalk_sessions_total{avatar="ann",outcome="'
    return {
        line[len(prefix) :].split('"')[0]: float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(prefix)
    }


async def limits(base: str, wav: Path, server: AvatarServer) -> dict:
    idle = await one_limited_session(base, server, None, Limits(idle_seconds=2.0))
    rate = await one_limited_session(base, server, wav, Limits(max_audio_rate=0.5, audio_burst=0.5))
    return {"idle": idle, "rate": rate, "outcomes": outcomes(server)}


def main(scenario: str, work: Path, model_dir: Path, tpl: Path, seconds: float) -> dict:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    wav = write_speech(work / "speech.wav", 1.5 if scenario == "talk" else 4.0)
    server = make_server(model_dir, tpl, max_clients=1)
    running = Running(server)
    base = f"http://{running.base}"
    if scenario == "talk":
        result = asyncio.run(talk(base, wav, seconds, server))
    else:
        result = asyncio.run(limits(base, wav, server))
    running.stop()
    result["active_after"] = server.active_sessions
    return result


if __name__ == "__main__":
    args = sys.argv[1:]
    print(
        json.dumps(
            main(args[0], Path(args[1]), Path(args[2]), Path(args[3]), float(args[4]) if len(args) > 4 else 0.0)
        ),
        flush=True,
    )
    os._exit(0)  # daemon threads (uvicorn, engine workers, the media player) end with the process
