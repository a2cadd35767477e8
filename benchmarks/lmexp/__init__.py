"""Code only the language-model experiments use (``hybrid_vs_tokens.py``, ``mel_token_information.py``):
the arms and their controls, count-based baselines, paired differences over files and seeds. Not part
of the ``audiotok`` package; tests import it as ``benchmarks.lmexp``."""
