"""The audio formats chat stores; reading and converting recordings is avatars.media's (probe_audio,
to_wav), shared with video generation."""

from __future__ import annotations

# XTTS computes a voice's GPT latents at 22.05 kHz (it resamples anything else to that, and to 16 kHz for
# the speaker embedding): a reference stored at 22.05 kHz mono is read without conversion.
VOICE_SAMPLE_RATE = 22050
# Whisper resamples to 16 kHz mono itself; a user's spoken turn is stored at that rate.
SPEECH_SAMPLE_RATE = 16000
