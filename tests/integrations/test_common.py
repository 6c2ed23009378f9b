"""The audio of an utterance cut per video frame (shared by the voice-agent plug-ins; no framework needed)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from synctalk_fast import Stream
from synctalk_fast.errors import AudioError
from synctalk_fast.integrations.common import SpeechAudio, Utterances, frame_span


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 22051, 24000, 44100, 48000, 7, 25, 1_000_003])
def test_frame_spans_tile_the_samples(rate):
    spans = [frame_span(k, rate) for k in range(1000)]
    assert spans[0][0] == 0
    assert all(hi == lo2 for (_, hi), (lo2, _) in zip(spans, spans[1:]))  # no gap, no overlap
    sizes = {hi - lo for lo, hi in spans}
    assert sizes <= {rate // 25, -(-rate // 25)}  # whole samples: floor or ceil of rate / 25
    for k, (lo, _) in enumerate(spans):  # each piece starts within one sample of its frame's time
        assert 0 <= k * rate / 25 - lo < 1


def test_cut_hands_out_the_audio_as_it_came():
    rate, channels = 22051, 2
    rng = np.random.default_rng(0)
    pcm = rng.integers(-32768, 32767, size=(rate // 2, channels), dtype=np.int16).tobytes()
    audio = SpeechAudio(rate, channels)
    pieces, i = [], 0
    for n in [1, 3, 4097, 10, 2 * 882 * 2 + 1] * 40:  # byte counts: samples split between chunks
        audio.add(pcm[i : i + n])
        i += n
        while audio.received >= frame_span(audio.frames, rate)[1] * 4 + 1:  # one frame's bytes have arrived
            pieces.append(audio.cut())
    audio.add(pcm[i:])
    pieces.append(audio.cut(last=True))
    assert b"".join(pieces) == pcm and audio.done
    for k, piece in enumerate(pieces[:-1]):
        lo, hi = frame_span(k, rate)
        assert piece == pcm[4 * lo : 4 * hi]


def test_a_frame_cut_short_is_completed_by_the_next():
    audio = SpeechAudio(16000, 1)
    audio.add(b"\x01\x00" * 100)
    assert audio.cut() == b"\x01\x00" * 100  # frame 0 wants 640 samples, 100 have arrived
    audio.add(b"\x02\x00" * 2000)
    assert audio.cut() == b"\x02\x00" * 1180  # frame 1 ends at sample 1280
    assert audio.cut(last=True) == b"\x02\x00" * 820 and audio.done
    assert audio.cut(last=True) == b""


def test_formats():
    assert SpeechAudio(np.int64(48000), np.int32(2)).width == 4  # type: ignore[arg-type]
    for rate, channels in [(0, 1), (16000, 0), (16000.0, 1), (True, 1), (16000, -2)]:
        with pytest.raises(AudioError):
            SpeechAudio(rate, channels)  # type: ignore[arg-type]


@pytest.mark.parametrize("rate, channels", [(16000, 1), (24000, 1), (44100, 2), (22051, 1), (8000, 2)])
def test_silence_to_one_encoder_window(rate, channels):
    """The silence a short utterance gets makes it exactly long enough: ceil(n * 16000 / rate) >= 3000."""
    for have in [0, 1, rate // 10, rate // 5, rate]:
        audio = SpeechAudio(rate, channels)
        audio.add(bytes(2 * channels * have))
        silence = audio.silence_to(3000)
        n = have + len(silence) // (2 * channels)
        assert len(silence) % (2 * channels) == 0 and -(-n * 16000 // rate) >= 3000
        assert not silence or -(-(n - 1) * 16000 // rate) < 3000  # and no longer
        assert audio.received == 2 * channels * have  # not added to the audio handed out


def test_utterances_follow_the_streams_numbering(engine, tpl):
    """Refused chunks open nothing; a change of format, an end or an interrupt starts the next
    number; the frames the stream makes carry the numbers the utterances have."""
    pcm = (np.sin(np.arange(8000) / 7.0) * 8000).astype("<i2").tobytes()  # 0.5 s at 16 kHz
    stream = Stream(engine, template=tpl, max_lag=0.0)  # max_lag 0: template frames, no U-Net
    try:
        utts = Utterances(stream)
        assert utts.add(b"", 16000, 1) is None and utts.count == 0
        first = utts.add(pcm, 16000, 1)
        assert first is not None and first.number == 0 and utts.open is first
        with pytest.raises(AudioError):
            utts.add(pcm, 0, 1)  # another format ends the open one; this one is refused
        assert utts.open is None and not first.open and utts.count == 1
        second = utts.add(pcm, 24000, 2)
        assert second is not None and second.number == 1 and stream.stats()["utterances"] == 2
        utts.interrupt()
        assert len(utts) == 0 and utts.get(1) is None
        short = utts.add(pcm[:1600], 16000, 1)  # 0.05 s: padded with silence at its end
        assert short is not None and short.number == 2 and utts.end() is short
        frames = []
        deadline = time.monotonic() + 60
        while not (frames and frames[-1].last) and time.monotonic() < deadline:
            frames += list(stream.frames(timeout=1.0))
        assert frames and {f.utterance for f in frames} == {2} and frames[-1].last
        assert len(frames) == 4 and utts.get(2) is short  # one encoder window: 4 frames
    finally:
        stream.close(drain=False)
