"""Spectral front-ends: Kaldi-compatible fbank for EnCodecMAE, causal log-mel for Whisper-GPT.

Each front-end is a pure function of a waveform tensor; none reads files.
"""

from __future__ import annotations
