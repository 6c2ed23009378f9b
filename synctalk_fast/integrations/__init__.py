"""Voice-agent plug-ins: the avatar in the agent's own process, on a shared :class:`~synctalk_fast.Engine`.

- :mod:`synctalk_fast.integrations.pipecat`: :class:`~synctalk_fast.integrations.pipecat.SyncTalkVideoService`,
  a Pipecat ``FrameProcessor`` placed after the TTS service (``pip install "synctalk-fast[pipecat]"``);
- :mod:`synctalk_fast.integrations.livekit`: :class:`~synctalk_fast.integrations.livekit.SyncTalkVideoGenerator`
  (a LiveKit Agents ``VideoGenerator``) and :class:`~synctalk_fast.integrations.livekit.SyncTalkAvatarSession`
  (``pip install "synctalk-fast[livekit]"``);
- :mod:`synctalk_fast.integrations.common`: what the plug-ins share, free of any framework: TTS
  utterances into the stream, and their audio kept as it came and cut per video frame.

Each plug-in is a layer above :mod:`synctalk_fast.stream`: it feeds a :class:`~synctalk_fast.Stream`
with the TTS audio (any rate and channel count; the stream converts it to the 16 kHz mono the
features need) and hands on each frame the stream makes with the 40 ms of the TTS's own audio it
shows. This package imports no framework: ``import synctalk_fast`` never loads one, and importing
a plug-in whose framework is not installed raises an ImportError naming the extra to install.
"""
