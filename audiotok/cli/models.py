"""``audiotok models``: every codec, embedder and LM audiotok knows, with its facts and whether its
weights are cached here (option parsing only; the listing is ``audiotok.jobs.models``)."""

from __future__ import annotations

import typer

from .base import app


@app.command()
def models(
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object (codecs, embedders, lms) instead of text."),
) -> None:
    """List the codecs (rates, frame rate, codebooks, bandwidths, weights), embedders and LMs, and
    whether each one's weights are cached here. Codecs of AUDIOTOK_PLUGINS modules are listed too."""
    import json

    from ..jobs.models import format_models, list_models

    listing = list_models()
    typer.echo(json.dumps(listing) if json_out else format_models(listing))
