"""What the voice-agent plug-ins share: TTS audio into a stream, and out again beside each frame.

:class:`Utterances` pushes a TTS's utterances into a :class:`~synctalk_fast.Stream` and keeps
each one (:class:`Utterance`) by the number the stream's frames carry, with its audio as it
came in (:class:`SpeechAudio`), until its last frame has left.

A voice agent's TTS speaks at its own sample rate and channel count, and the
user must hear exactly that audio: the plug-ins never resample what they hand
on. :class:`SpeechAudio` keeps the utterance's int16 PCM bytes as they arrive
and cuts them per video frame with :func:`frame_span`:

    frame ``k`` carries samples ``floor(k * rate / fps) .. floor((k + 1) * rate / fps) - 1``

(per channel; a "sample" here is one sample of every channel). The pieces
tile the utterance without gap or overlap whatever the rate, also where
``rate / fps`` is not a whole number (e.g. 22 051 Hz: pieces of 882 or 883
samples), and each piece starts within one sample of its frame's time. The
last frame of an utterance carries everything left (an utterance makes
about 0.7 frames fewer than its length in frames, so this is its last 68 to
120 ms); the pieces concatenated are exactly the bytes that came in.
An utterance shorter than one encoder window (about 0.19 s, which makes no
frame) is padded with silence for the stream (:meth:`SpeechAudio.silence_to`):
its frames show the speech, then the silence, and its last frames carry
no audio.

Nothing here holds a lock or knows a framework: each plug-in calls it from
its one event loop.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

from .._filters import SAMPLE_RATE
from ..engine import Engine
from ..errors import AudioError, FeatureError
from ..live_features import MIN_SAMPLES
from ..stream import Stream
from ..stream.core import EngineHolder
from ..template import Template, TemplateLike

__all__ = ["SpeechAudio", "Utterance", "Utterances", "avatar_template", "frame_span"]


def frame_span(k: int, sample_rate: int, fps: int = 25) -> tuple[int, int]:
    """Samples ``[lo, hi)`` of video frame ``k`` at ``sample_rate``: ``floor(k *
    rate / fps)`` and ``floor((k + 1) * rate / fps)``, in integers (exact for any rate).

    Parameters
    ----------
    k : int
        Frame number within the utterance (0, 1, ...).
    sample_rate : int
        Samples per second (per channel).
    fps : int
        Video frames per second.

    Returns
    -------
    tuple of int
        ``(lo, hi)``, sample indices (per channel).
    """
    return k * sample_rate // fps, (k + 1) * sample_rate // fps


def _positive_int(value: object, name: str) -> int:
    try:
        n = operator.index(value)  # type: ignore[arg-type]  # int, numpy integers; not float or bool
    except TypeError:
        n = 0
    if isinstance(value, bool) or n <= 0:
        raise AudioError(f"{name} must be a positive integer, got {value!r}")
    return n


class SpeechAudio:
    """One utterance's int16 interleaved PCM, kept as it came, handed out one video frame at a time.

    Parameters
    ----------
    sample_rate : int
        The TTS's sample rate (positive).
    channels : int
        Its channel count (positive); bytes are interleaved int16 little-endian.
    fps : int
        Video frames per second.

    Attributes
    ----------
    received : int
        Bytes added so far.
    sent : int
        Bytes handed out so far (by :meth:`cut`); bytes ``sent .. received - 1`` are held.
    frames : int
        Pieces cut so far (the next :meth:`cut` is frame ``frames``).

    Raises
    ------
    AudioError
        A sample rate or channel count that is not a positive integer.
    """

    def __init__(self, sample_rate: int, channels: int, *, fps: int = 25):
        self.sample_rate = _positive_int(sample_rate, "sample_rate")
        self.channels = _positive_int(channels, "channels")
        self.fps = fps
        self.width = 2 * channels  # bytes of one sample of every channel
        self.received = 0
        self.sent = 0
        self.frames = 0
        self._held = bytearray()  # bytes sent .. received - 1

    def __repr__(self) -> str:
        return (
            f"SpeechAudio({self.sample_rate} Hz x {self.channels}, received={self.received} B, "
            f"sent={self.sent} B, frames={self.frames})"
        )

    @property
    def done(self) -> bool:
        """Every byte received has been handed out."""
        return self.sent == self.received

    def add(self, data: bytes | bytearray | memoryview) -> None:
        """Append PCM bytes as they came (a sample split between two chunks is fine)."""
        self._held += data
        self.received += len(data)

    def silence_to(self, samples_16k: int) -> bytes:
        """Silence to append for the stream, so that the utterance holds at least
        ``samples_16k`` samples once resampled to 16 kHz (``ceil(n * 16000 / rate)``, the
        length :func:`~synctalk_fast.load_audio` gives).

        Parameters
        ----------
        samples_16k : int
            The length wanted at 16 kHz (e.g. ``MIN_SAMPLES``, one encoder window).

        Returns
        -------
        bytes
            int16 zeros, whole samples of every channel; empty if the utterance is long
            enough. They are not added here: the audio handed out stays what came in.
        """
        # the fewest samples n with ceil(n * 16000 / rate) >= samples_16k, i.e. n * 16000 / rate > samples_16k - 1
        need = (samples_16k - 1) * self.sample_rate // SAMPLE_RATE + 1 if samples_16k > 0 else 0
        return bytes(max(0, need - self.received // self.width) * self.width)

    def cut(self, *, last: bool = False) -> bytes:
        """The audio of the next video frame (number :attr:`frames`).

        Parameters
        ----------
        last : bool, keyword-only
            The utterance's last frame: everything still held.

        Returns
        -------
        bytes
            Samples :func:`frame_span` ``(frames)`` of the utterance (whole
            samples of every channel), or for the last frame every byte not
            yet handed out. Only bytes that have arrived are handed out (may
            be empty); a frame cut short is completed by the next one, so the
            pieces always join up.
        """
        k = self.frames
        self.frames += 1
        end = self.received if last else min(self.received, frame_span(k, self.sample_rate, self.fps)[1] * self.width)
        n = max(0, end - self.sent)
        out = bytes(self._held[:n])
        del self._held[:n]
        self.sent += n
        return out


@dataclass(eq=False)
class Utterance:
    """One utterance of TTS audio pushed into a stream.

    Attributes
    ----------
    number : int
        Its number in the stream (:attr:`StreamFrame.utterance <synctalk_fast.StreamFrame.utterance>`).
    audio : SpeechAudio
        Its audio as it came.
    tag : object
        What the framework knows it by (Pipecat's ``context_id``), or None.
    open : bool
        Audio may still come (it has not been ended).
    """

    number: int
    audio: SpeechAudio
    tag: object = None
    open: bool = True


class Utterances:
    """TTS audio into a :class:`~synctalk_fast.Stream`, one :class:`Utterance` at a time, and the
    utterances whose frames are still to come, by number.

    Invariants: the stream's utterances are numbered 0, 1, ... in the order their first chunk
    is pushed (an interrupted or padded one included), and :attr:`count` follows that numbering;
    only the last utterance can be open; :meth:`get` finds an utterance from its first chunk until
    :meth:`forget` or :meth:`interrupt`. The owner calls everything from one thread (its event
    loop); nothing here waits for compute.

    Parameters
    ----------
    stream : Stream
        The stream the audio goes to (its owner consumes the frames).
    fps : int
        Video frames per second (the audio is cut per frame at this rate).
    """

    def __init__(self, stream: Stream, *, fps: int = 25):
        self.stream = stream
        self.fps = fps
        self.open: Utterance | None = None
        self.count = 0  # utterances opened in the stream
        self._live: dict[int, Utterance] = {}

    def __len__(self) -> int:
        """Utterances not yet forgotten."""
        return len(self._live)

    def __contains__(self, number: object) -> bool:
        return number in self._live

    def get(self, number: int) -> Utterance | None:
        """The utterance of that number, or None (interrupted, forgotten, or an idle frame's -1)."""
        return self._live.get(number)

    def add(self, data: bytes, sample_rate: int, channels: int, tag: object = None) -> Utterance | None:
        """Push int16 interleaved PCM into the open utterance (a new one if none is open, or if
        its format differs: the format is fixed within an utterance).

        Parameters
        ----------
        data : bytes
            int16 little-endian PCM, interleaved; any length.
        sample_rate : int
            Its sample rate.
        channels : int
            Its channel count.
        tag : object
            Kept on a new utterance (:attr:`Utterance.tag`).

        Returns
        -------
        Utterance or None
            The utterance it went to; None for empty ``data`` (nothing is pushed).

        Raises
        ------
        AudioError
            A format the stream refuses; nothing has changed (no utterance is opened for it,
            though an open one of another format has been ended).
        """
        if not data:
            return None
        utt = self.open
        if utt is not None and (utt.audio.sample_rate, utt.audio.channels) != (sample_rate, channels):
            self.end()
            utt = None
        audio = utt.audio if utt is not None else SpeechAudio(sample_rate, channels, fps=self.fps)
        self.stream.push_audio(data, sample_rate=sample_rate, channels=channels)  # raises before any change
        if utt is None:
            utt = self.open = Utterance(self.count, audio, tag)
            self._live[utt.number] = utt
            self.count += 1
        utt.audio.add(data)
        return utt

    def end(self) -> Utterance | None:
        """End the open utterance: the stream computes its last frames.

        One shorter than an encoder window is padded with silence for the stream, so that every
        utterance makes frames (:meth:`SpeechAudio.silence_to`).

        Returns
        -------
        Utterance or None
            The utterance ended; None if none was open.
        """
        utt, self.open = self.open, None
        if utt is None:
            return None
        utt.open = False
        silence = utt.audio.silence_to(MIN_SAMPLES)
        if silence:
            self.stream.push_audio(silence, sample_rate=utt.audio.sample_rate, channels=utt.audio.channels)
        self.stream.flush()
        return utt

    def forget(self, utt: Utterance) -> None:
        """``utt`` has left entirely (its last frame, or given up)."""
        self._live.pop(utt.number, None)

    def interrupt(self) -> None:
        """Barge-in: the stream drops every frame not yet out; every utterance is forgotten."""
        self.stream.interrupt()
        self.forget_all()

    def forget_all(self) -> None:
        """Forget every utterance (the stream is left as it is)."""
        self._live.clear()
        self.open = None


def avatar_template(engine: Engine | EngineHolder, template: TemplateLike, max_lag: float | None) -> Template:
    """Check what a plug-in runs on, and load its template.

    Parameters
    ----------
    engine : Engine or Pipeline
        An ave engine with an audio encoder (or a Pipeline on one).
    template : Template, str or os.PathLike
        A folder is loaded with the engine's ``cache_mb``, or through a Pipeline's cache.
    max_lag : float, optional
        Checked only.

    Returns
    -------
    Template
        The person.

    Raises
    ------
    FeatureError
        The engine has no ave U-Net or no audio encoder.
    ValueError
        ``max_lag`` below 0.
    TemplateError
        ``template`` is not a template folder.
    """
    eng = engine if isinstance(engine, Engine) else engine.engine
    if eng.mode != "ave" or eng.encoder is None:
        raise FeatureError("the avatar computes features from audio: it needs an ave U-Net and an audio encoder")
    if max_lag is not None and not max_lag >= 0:
        raise ValueError(f"max_lag must be >= 0 seconds, got {max_lag!r}")
    if isinstance(template, Template):
        return template
    if isinstance(engine, Engine):
        return Template(template, cache_mb=engine.options.cache_mb)
    return engine.template(template)
