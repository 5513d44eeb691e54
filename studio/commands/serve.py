"""`studio serve`: an OpenAI-compatible API for a model or a fine-tuned run.

Binds 127.0.0.1 unless told otherwise, and refuses any other host without an API key
(checked before the model loads, so the mistake costs nothing). The key can also come
from the STUDIO_API_KEY environment variable, which keeps it out of `ps` listings.
"""

from __future__ import annotations

import logging
import os
import sys

from studio.commands.chat import add_model_arguments


def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a model over an OpenAI-compatible HTTP API",
        description="Serve a model (with an optional adapter) over an OpenAI-compatible API: "
        "GET /v1/models, POST /v1/chat/completions, POST /v1/completions.",
    )
    add_model_arguments(p)
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    p.add_argument("--port", type=int, default=8000, help="port (0 picks a free one)")
    p.add_argument(
        "--api-key",
        default=None,
        help="require 'Authorization: Bearer KEY' (default: $STUDIO_API_KEY)",
    )
    p.add_argument(
        "--model-name",
        default=None,
        help="the model id clients use (default: the run or model folder name)",
    )
    p.set_defaults(handler=run)


def run(args) -> int:
    from studio.commands.chat import load
    from studio.serve import App, check_host

    api_key = args.api_key or os.environ.get("STUDIO_API_KEY") or None
    check_host(args.host, api_key)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    app = App(load(args), api_key=api_key, model_id=args.model_name).bind(args.host, args.port)
    print(
        f"  e.g. OpenAI(base_url={app.url!r}, api_key={'KEY' if api_key else repr('unused')})",
        file=sys.stderr,
    )
    app.run()
    return 0
