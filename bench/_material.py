"""What the serving benchmarks run on: the shared face U-Net, template and speech when the
shared data is there, else random weights, a synthetic 1280x720 template and synthetic speech;
and the server they measure, ``synctalk-fast serve`` in a process of its own."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from synctalk_fast import load_audio, models
from synctalk_fast.demo import synthetic_speech, synthetic_template


def material(data: Path, work: Path) -> tuple[Path, Path, Path, np.ndarray, str]:
    """``(template, unet.onnx, audio_encoder.onnx, speech, description)``: speech float32 at 16 kHz;
    the encoder is the demo's (fixed random weights)."""
    face, template, talk = data / "models" / "face_unet.pth", data / "sanders", data / "audio" / "talk_hb.wav"
    if face.is_file() and (template / "landmarks").is_dir() and talk.is_file():
        models.export_onnx(models.load_state_dict(face), work / "unet.onnx")
        speech, what = load_audio(talk), "the face U-Net, the shared template and speech"
    else:
        models.export_onnx(models.random_state_dict("unet", seed=0), work / "unet.onnx", kind="unet")
        template = synthetic_template(work / "tpl", frames=100, width=1280, height=720)
        speech, what = synthetic_speech(30.0), "random weights, a synthetic template and speech"
    return template, work / "unet.onnx", models.demo_audio_encoder(work / "enc.onnx"), speech, what


CLI = [sys.executable, "-m", "synctalk_fast"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``synctalk-fast serve`` in a process of its own, on 127.0.0.1."""

    def __init__(self, avatar: str, encoder: Path, max_clients: str, options: list[str], log: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        args = [*CLI, "serve", "--avatar", avatar, "--audio-encoder", str(encoder), "--port", str(self.port)]
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            [*args, "--max-clients", max_clients, *options], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 300
        while True:
            try:
                self.health = json.loads(urllib.request.urlopen(f"{self.base}/healthz", timeout=2).read())
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    sys.exit(f"the server did not start: see {log}")
                time.sleep(0.5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
