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
        description="Serve a model (with an optional adapter) over an OpenAI-compatible API "
        "(FastAPI on uvicorn): GET /v1/models, POST /v1/chat/completions, POST /v1/completions, "
        "POST /v1/embeddings, GET /health. Greedy requests that arrive together are generated "
        "as one batch.",
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
    limits = p.add_argument_group("limits", "what one client may cost the server")
    limits.add_argument(
        "--max-body-mb",
        type=float,
        default=16,
        help="largest request body in MiB; a larger one is refused with 413 (default 16)",
    )
    limits.add_argument(
        "--max-connections",
        type=int,
        default=64,
        help="connections served at once; one more is answered 503 (default 64)",
    )
    limits.add_argument(
        "--request-timeout",
        type=float,
        default=30,
        help="seconds a request may take to arrive, and an answer may wait for a client "
        "that stops reading it (default 30)",
    )
    p.set_defaults(handler=run)


def limits(args):
    """The Limits the flags ask for; a value that cannot work is refused naming its flag."""
    from studio.core.errors import ConfigError
    from studio.serve import Limits

    for flag, value, ok in (
        ("--max-body-mb", args.max_body_mb, 0 < args.max_body_mb <= 1024 * 1024),
        ("--max-connections", args.max_connections, args.max_connections >= 1),
        ("--request-timeout", args.request_timeout, 0 < args.request_timeout < 1e6),
    ):
        if not ok:  # NaN fails every comparison, so it lands here too
            raise ConfigError(f"serve: {flag} must be above 0; got {value}", field=flag[2:])
    return Limits(
        max_body_bytes=max(1, int(args.max_body_mb * 1024 * 1024)),
        max_connections=args.max_connections,
        request_timeout=args.request_timeout,
    )


def run(args) -> int:
    from studio.commands.chat import load
    from studio.serve import App, check_host

    api_key = args.api_key or os.environ.get("STUDIO_API_KEY") or None
    check_host(args.host, api_key)
    bounds = limits(args)  # checked before the model loads, like the host
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    app = App(load(args), api_key=api_key, model_id=args.model_name, limits=bounds)
    app.bind(args.host, args.port)
    print(
        f"  e.g. OpenAI(base_url={app.url!r}, api_key={'KEY' if api_key else repr('unused')})",
        file=sys.stderr,
    )
    app.run()
    return 0
