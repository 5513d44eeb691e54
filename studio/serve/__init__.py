"""An OpenAI-compatible server for a base model, a fine-tuned adapter or a merged model.

    from studio.serve import create_app
    app = create_app(model_path="path/to/model", adapter="runs/my-run")
    app.run(host="127.0.0.1", port=8000)        # blocks until Ctrl-C

`app.start(port=0)` serves on a background thread instead (`app.port`, `app.url`), and
`app.stop()` ends it. `limits=Limits(...)` changes what one request may cost (body size,
connections, timeouts...). torch is loaded by `create_app`, not by importing this package.

A FastAPI app (routes.py) on uvicorn, held to `Limits` on the wire (connection.py), with
generation on one thread that batches greedy requests arriving together (engine.py).
"""

from __future__ import annotations

from studio.serve.app import App, check_host, is_loopback
from studio.serve.limits import Limits

__all__ = ["App", "Limits", "check_host", "create_app", "is_loopback"]


def create_app(
    model_path: str = "",
    adapter: str | None = None,
    api_key: str | None = None,
    *,
    model=None,
    model_id: str | None = None,
    quant: str = "none",
    device: str = "auto",
    template: str = "",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    limits: Limits | None = None,
) -> App:
    """Load the model (or use an already loaded `model`, a ChatModel) and wrap it in an App."""
    if model is None:
        from studio.core.infer import load_chat_model

        model = load_chat_model(
            model_path,
            adapter,
            quant=quant,
            device=device,
            template=template,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            allow_pickle=allow_pickle,
        )
    return App(model, api_key=api_key, model_id=model_id, limits=limits)
