"""The load generator (synctalk_fast.loadtest, ``synctalk-fast loadtest``) against a real server
on 127.0.0.1: its clients speak the protocol, its timings are causal, its faults are counted,
and it imports nothing of the server."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from synctalk_fast.demo import synthetic_speech
from synctalk_fast.live_features import frame_need
from synctalk_fast.loadtest import FLOOR, LoadResult, endpoints, ramp, run_load, speech_plan
from synctalk_fast.loadtest.plan import CHUNK, RATE

pytest.importorskip("websockets")
pytest.importorskip("prometheus_client")

SPEECH = np.round(synthetic_speech(8.0, seed=3) * 32767).astype(np.int16)


# --- the plan and the URLs (no server) ------------------------------------------------------


def test_plans_fill_their_time_and_repeat():
    plan = speech_plan(SPEECH, seconds=30.0, seed=5, interrupt_share=0.3)
    assert sum(u.sent / RATE + u.pause for u in plan) >= 30.0
    assert all(1.5 * RATE <= len(u.samples) <= 4.0 * RATE and 0.3 <= u.pause <= 1.2 for u in plan)
    cut = [u for u in plan if u.interrupt_at is not None]
    assert cut and all(0.3 * len(u.samples) <= u.interrupt_at <= 0.8 * len(u.samples) for u in cut)
    again = speech_plan(SPEECH, seconds=30.0, seed=5, interrupt_share=0.3)
    assert all(np.array_equal(a.samples, b.samples) and a.interrupt_at == b.interrupt_at for a, b in zip(plan, again))
    assert speech_plan(SPEECH, seconds=30.0, seed=6)[0].samples[:100].tolist() != plan[0].samples[:100].tolist()
    with pytest.raises(ValueError, match="mono"):
        speech_plan(SPEECH[: CHUNK - 1], seconds=1.0)


def test_endpoints():
    assert endpoints("http://127.0.0.1:8000", "may") == (
        "ws://127.0.0.1:8000/v1/avatars/may/stream",
        "http://127.0.0.1:8000",
    )
    assert endpoints("wss://[::1]:9/x", "a b") == ("wss://[::1]:9/v1/avatars/a%20b/stream", "https://[::1]:9")
    with pytest.raises(ValueError, match="--remote"):
        endpoints("http://example.com:8000", "may")
    assert endpoints("http://example.com", "may", remote=True)[0] == "ws://example.com/v1/avatars/may/stream"
    with pytest.raises(ValueError, match="server URL"):
        endpoints("ftp://127.0.0.1", "may")


def test_it_imports_nothing_of_the_server():
    """A client of the public protocol only: it measures what users get."""
    import synctalk_fast.loadtest as lt

    for path in Path(lt.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                name = ("." * node.level) + (node.module or "")
                assert "serve" not in name.split("."), f"{path.name} imports {name}"
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("synctalk_fast.serve") for a in node.names), path.name


# --- against the server ----------------------------------------------------------------------


def url(running) -> str:
    return f"http://{running.base}"


def test_one_client_gets_every_frame_of_its_utterances_in_causal_time(running):
    level = run_load(url(running), avatar="ann", sessions=1, seconds=3.0, speech=SPEECH, image_format="raw", seed=1)
    (client,) = level.clients
    assert not client.refused and client.close_code == 1000 and not client.errors
    assert client.utterances == client.flushed + client.interrupted >= 1
    assert client.completed == client.flushed and client.missing == client.dropped == client.skipped == 0
    assert client.frames > 0 and len(client.delays) == len(client.waits) == client.frames
    # causality: no frame arrives before the last sample it needs was sent; its own audio comes first
    assert min(client.waits) > 0 and all(d >= w for d, w in zip(client.delays, client.waits))
    assert client.bytes_received == client.frames * 320 * 240 * 3  # raw BGR frames of the test avatar
    s = level.summary()
    assert s["admitted"] == 1 and s["frames"] == client.frames and s["bytes_per_frame"] == 320 * 240 * 3
    srv = s["server"]
    assert srv["capacity"] == 2 and srv["rss_peak"] >= srv["rss_start"] > 50 * 2**20
    assert srv["cpu_seconds"] is not None and srv["cpu_seconds"] > 0
    json.dumps(s)


def test_the_first_frame_waits_for_the_models_context(running):
    """Frame 0 of an utterance needs frame_need(0) samples: its delay is at least that, less a chunk."""
    speech = SPEECH[: 2 * RATE]
    level = run_load(url(running), avatar="ann", sessions=1, seconds=0.1, speech=speech, seed=2)
    (client,) = level.clients
    assert client.frames > 0 and client.delays[0] >= FLOOR - CHUNK / RATE
    assert FLOOR == frame_need(0) / RATE == pytest.approx(0.45)


def test_a_client_over_capacity_is_counted_refused_and_the_level_does_not_hold(running, server):
    level = run_load(url(running), avatar="ann", sessions=3, seconds=1.0, speech=SPEECH, stagger=0.3)
    s = level.summary()
    assert s["sessions"] == 3 and s["admitted"] == 2 and s["refused"] == 1 and "server_full" in s["errors"]
    refused = [c for c in level.clients if c.refused]
    assert refused[0].close_code == 1013 and refused[0].frames == 0
    assert not level.held() and not s["held"]


def test_ramp_stops_at_the_first_level_that_does_not_hold(running, monkeypatch):
    import synctalk_fast.loadtest.run as run_mod

    calls = []

    def fake_run_load(u, *, sessions, **kwargs):  # levels 1 and 2 hold, 3 does not
        calls.append(sessions)
        level = LoadResult(sessions, 1.0, [])
        monkeypatch.setattr(level, "held", lambda: sessions < 3)
        return level

    monkeypatch.setattr(run_mod, "run_load", fake_run_load)
    result = ramp(url(running), max_sessions=10, avatar="ann", seconds=1.0, speech=SPEECH)
    assert calls == [1, 2, 3] and result.held == 2 and len(result.levels) == 3


def test_cli_runs_a_ramp_and_writes_json_and_a_chart(running, tmp_path, capsys):
    from synctalk_fast.cli import main

    out, chart = tmp_path / "ramp.json", tmp_path / "ramp.png"
    argv = ["loadtest", url(running), "--avatar", "ann", "--sessions", "2", "--seconds", "1.5", "--ramp"]
    code = main([*argv, "--json", str(out), "--chart", str(chart)])
    printed = capsys.readouterr().out
    record = json.loads(out.read_text())
    assert record["url"] == url(running) and record["avatar"] == "ann" and record["floor"] == FLOOR
    assert 1 <= len(record["levels"]) <= 2 and record["levels"][0]["sessions"] == 1
    assert code == (0 if record["held"] else 1) and f"held: {record['held']} client(s)" in printed
    assert printed.count(" clients: ") == len(record["levels"])
    image = cv2.imread(str(chart))
    assert image is not None and image.shape == (480, 900, 3)


def test_cli_refuses_another_machine_and_bad_numbers(capsys):
    from synctalk_fast.cli import main

    assert main(["loadtest", "http://example.com:8000", "--avatar", "ann", "--seconds", "1"]) == 2
    assert "--remote" in capsys.readouterr().err
    assert main(["loadtest", "http://127.0.0.1:9", "--avatar", "ann", "--sessions", "0"]) == 2
    assert "--sessions" in capsys.readouterr().err
