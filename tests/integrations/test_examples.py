"""The offline agent examples (examples/*_avatar_offline.py): scripted TTS -> avatar -> MP4,
with the demo's material, each through its framework's own machinery."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("framework, module", [("pipecat", "pipecat"), ("livekit", "livekit.agents")])
def test_offline_example_writes_the_agents_video(framework, module, tmp_path, monkeypatch):
    av = pytest.importorskip("av")
    pytest.importorskip(module, reason=f"the {framework} extra is not installed")
    path = EXAMPLES / f"{framework}_avatar_offline.py"
    if not path.is_file():
        pytest.skip(f"no {path} in this tree")
    monkeypatch.syspath_prepend(str(EXAMPLES))  # as `python examples/...py` has it: its helper module beside it
    spec = importlib.util.spec_from_file_location(f"{framework}_avatar_offline", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = example.main(["-o", str(tmp_path / "agent.mp4")])
    with av.open(str(out)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        frames = sum(1 for _ in container.decode(video=0))
        assert audio.codec_context.name == "aac"
        seconds = float(audio.duration * audio.time_base) if audio.duration else None
    # two replies of 1.2 s: 29 frames each (n + 2 for n encoder windows), all shown
    assert frames == 2 * 29 and (video.width, video.height) == (640, 480)
    assert seconds is None or seconds == pytest.approx(2 * 1.2, abs=0.1)
