"""A small client for any OpenAI-compatible chat endpoint (`studio serve`, vLLM, Ollama, OpenAI).

urllib only, so no extra package; the key is sent as a Bearer token and never written
anywhere. Used by the evaluation's judge and by data generation.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

TIMEOUT_S = 120.0
"""One reply: a big model on a busy server can take a while, a dead one must not hang us."""


class Unreachable(Exception):
    """The endpoint cannot be reached or refuses us: no later call would do better."""


def chat_url(url: str) -> str:
    """The chat completions URL for a base URL (http://host:port or .../v1)."""
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if not url.endswith("/v1"):
        url += "/v1"
    return url + "/chat/completions"


class ChatClient:
    def __init__(self, url: str, model: str, key: str = "", timeout: float = TIMEOUT_S):
        self.url, self.model, self.key, self.timeout = chat_url(url), model, key, timeout

    def reply(self, messages: list[dict], **params) -> str | None:
        """The assistant's text for `messages`, or None when the reply was not a completion
        (a server error on this one request; Unreachable when every request would fail)."""
        body = {"model": self.model, "messages": messages, **params}
        answer = self.post(body)
        try:
            return answer["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            return None

    def post(self, body: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        request = urllib.request.Request(
            self.url, data=json.dumps(body).encode("utf-8"), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read().decode("utf-8", "replace"))
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")[:200] if e.fp else ""
            if e.code in (401, 403, 404):  # wrong key, wrong URL or wrong model: all will fail
                raise Unreachable(f"HTTP {e.code} from {self.url}: {detail}") from None
            return {"error": f"HTTP {e.code}: {detail}"}
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            why = getattr(e, "reason", None) or e
            raise Unreachable(f"{self.url} could not be reached ({why})") from None
        except ValueError:
            return {"error": "the reply was not JSON"}
