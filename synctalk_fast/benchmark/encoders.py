"""Video encoding rows (``--presets``): libx264 presets at CRF 20, and the MP4 writer's speed per encoder."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .._util.system import cpu_cores
from ..sinks import ENCODERS, X264_PRESETS, Mp4Sink, encoder_problem
from ..template import Template
from .measure import span

__all__ = ["preset_rows", "encoder_rows"]


def _encode(yuv: list[np.ndarray], width: int, height: int, preset: str) -> tuple[bytes, float]:
    """The frames (I420) as an MP4 at CRF 20 on one encoder thread: (file bytes, CPU seconds)."""
    import av  # PyAV: the MP4 writer's own dependency

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s: Any = c.add_stream("libx264", rate=25, options={"crf": "20", "preset": preset})
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.codec_context.thread_count = 1
        cpu0 = time.process_time()
        for i, y in enumerate(yuv):
            vf = av.VideoFrame.from_ndarray(y, format="yuv420p")
            vf.pts = i
            c.mux(s.encode(vf))
        c.mux(s.encode(None))
        cpu = time.process_time() - cpu0
    return buf.getvalue(), cpu


def preset_rows(tpl: Template, n: int) -> list[dict[str, Any]]:
    """Each libx264 preset up to medium at CRF 20 on ``n`` template frames: CPU
    ms/frame (one encoder thread), bit rate, PSNR against the source frames."""
    import av

    frames = [tpl.frame(k % len(tpl), copy=False) for k in range(n)]
    yuv = [cv2.cvtColor(f, cv2.COLOR_BGR2YUV_I420) for f in frames]
    height, width = frames[0].shape[:2]
    rows = []
    for preset in X264_PRESETS[:6]:  # ultrafast .. medium; slower ones are off any real-time budget
        data, cpu = _encode(yuv, width, height, preset)
        with av.open(io.BytesIO(data), mode="r") as d:
            decoded = [f.to_ndarray(format="yuv420p") for f in d.decode(video=0)]
        mse = np.mean([np.mean((a.astype(np.float64) - b) ** 2) for a, b in zip(decoded, yuv)])
        r = {
            "preset": preset,
            "cpu_ms_per_frame": round(1000 * cpu / n, 2),
            "kbit_s": round(len(data) * 8 * 25 / n / 1000, 1),
            "psnr_db": round(10 * np.log10(255**2 / mse), 2),
        }
        rows.append(r)
        print(
            f"  x264 {preset:<10s} {r['cpu_ms_per_frame']:6.1f} ms/frame {r['kbit_s']:7.0f} kbit/s "
            f"PSNR {r['psnr_db']:.2f} dB",
            flush=True,
        )
    return rows


def encoder_rows(tpl: Template, n: int, work: Path) -> list[dict[str, Any]]:
    """Encoding speed of the MP4 writer alone (wall frames/s, template frames,
    default preset): libx264 on one thread and on every core this process may
    use, and each hardware encoder that runs here."""
    frames = [tpl.frame(k % len(tpl), copy=False) for k in range(n)]
    plans = [("libx264", 1), ("libx264", cpu_cores())]
    plans += [(name, 0) for name in ENCODERS if name != "libx264" and encoder_problem(name) is None]
    rows = []
    for name, threads in plans:

        def write(name: str = name, threads: int = threads) -> None:
            with Mp4Sink(work / "encoder.mp4", encoder=name, threads=threads) as writer:
                for frame in frames:
                    writer.write(frame)

        fps = n / span(write)
        rows.append({"encoder": name, "threads": threads or None, "fps": round(fps, 1)})
        print(f"  encoder {name:<11s} threads {threads or '-':<3} {fps:7.1f} frames/s", flush=True)
    return rows
