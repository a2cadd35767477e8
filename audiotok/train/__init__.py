"""Training loops: ``lm`` (Whisper-GPT, token-GPT); room for ``mae``."""
