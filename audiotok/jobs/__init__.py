"""The library layer: one module per command (``encode``, ``decode``, ``embed``, ``score``) with
its job (what to do with each input) and its ``*_files`` function, all run by ``runner.run_job``;
``train_lm`` (``audiotok train lm``) collects its data through the same pipeline and trains.
The CLI only parses options for these; the Python API is these functions."""
