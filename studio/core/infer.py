"""Load a model for chat: base model + adapter (or checkpoint), or a merged model.

`load_chat_model(model, adapter=...)` returns a `ChatModel` whose `chat(messages, settings)`
gives a `Generation`: iterate it for text pieces, call `.stop()` from any thread to end it
within a token. The conversation is rendered with the same chat template as training: the
run's `data.template` from run.yaml when the adapter sits in a run folder, else the
tokenizer's own template, else ChatML.

`adapter` may be a run folder (its adapter/ is used), an adapter folder, or a checkpoint
folder (same layout). Without `model`, the base model is read from the run's run.yaml or the
adapter's adapter_config.json.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from studio.core.config import ModelConfig
from studio.core.data.templates import ChatML, ChatTemplate, resolve_template
from studio.core.errors import ModelError, StudioError
from studio.core.generation import CancelToken, Generation, GenerationSettings

Progress = Callable[[int, int], None]


@dataclass
class AdapterInfo:
    folder: Path
    """The folder holding adapter_config.json and the adapter weights."""
    run_dir: Path | None
    """The run folder it belongs to (has run.yaml), if any."""
    base_model: str
    """The base model named by run.yaml or adapter_config.json ("" if neither says)."""
    template: str
    """data.template from run.yaml, or "" when there is no run.yaml."""


def find_adapter(path: str | Path) -> AdapterInfo:
    """Locate the adapter weights and the run folder for a run, adapter or checkpoint path."""
    from studio.core.checkpoint import recover_folder

    p = Path(path).expanduser().resolve()
    recover_folder(p / "adapter")  # a run killed while replacing its final adapter
    recover_folder(p)
    if not p.exists():
        raise ModelError(f"adapter: no such folder: {p}", field="adapter")
    if (
        p.is_dir()
        and not (p / "adapter_config.json").is_file()
        and (p / "adapter" / "adapter_config.json").is_file()
    ):
        p = p / "adapter"  # a run folder: use its final adapter
    if not p.is_dir() or not (p / "adapter_config.json").is_file():
        raise ModelError(
            f"adapter: {p} has no adapter_config.json; give a run folder, its adapter/ folder "
            "or one of its checkpoints/step-* folders",
            field="adapter",
        )
    # RUN/adapter or RUN/checkpoints/step-N: run.yaml is one or two levels up.
    run_dir = next((d for d in (p.parent, p.parent.parent) if (d / "run.yaml").is_file()), None)
    base, template = "", ""
    if run_dir is not None:
        from studio.core.config import RunConfig

        try:
            cfg = RunConfig.load(run_dir / "run.yaml")
            base, template = cfg.model.path, cfg.data.template
        except StudioError:
            run_dir = None  # a broken run.yaml: fall back to what the adapter says
    if not base:
        base = _named_base(p / "adapter_config.json")
    return AdapterInfo(p, run_dir, base, template)


def _named_base(config_file: Path) -> str:
    """The base model adapter_config.json names, or "" (unreadable, not an object, no name)."""
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return ""
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    return base if isinstance(base, str) else ""


def chat_template(tokenizer, run_template: str = "") -> ChatTemplate:
    """Training's template: run.yaml's choice, else the tokenizer's own, else ChatML."""
    if run_template and run_template != "auto":
        return resolve_template(tokenizer, run_template)
    if getattr(tokenizer, "chat_template", None):
        return resolve_template(tokenizer, "auto")
    return ChatML()


def _stop_ids(tokenizer, model, template: ChatTemplate) -> set[int]:
    ids = set()
    eos = getattr(model.generation_config, "eos_token_id", None)
    ids.update(eos if isinstance(eos, list) else [eos])
    ids.add(tokenizer.eos_token_id)
    # Stop strings that are single special tokens (e.g. <|im_end|>) never reach the text,
    # because pieces are decoded without special tokens: stop on their ids instead.
    special = set(getattr(tokenizer, "all_special_tokens", []))
    for s in template.stop_strings:
        if s in special:
            ids.add(tokenizer.convert_tokens_to_ids(s))
    return {i for i in ids if isinstance(i, int)}


@dataclass
class SharedBase:
    """One copy of a base model's weights serving several ChatModels (compare mode).

    Adapters are loaded side by side into one PeftModel around the base; each ChatModel
    names the adapter it answers with ("" for the bare base) and switches to it before
    generating, under the shared lock. Two 7B models in compare mode then cost one base in
    memory, not two.
    """

    key: tuple
    """What makes two loads the same base: path, quantization, device, dtype, remote code."""
    net: object
    """The base model; adapters are injected into its layers in place."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    peft: object | None = None
    """The PeftModel around `net`, once an adapter is loaded."""
    active: str | None = ""
    """The adapter the weights answer with now ("" for none; None when not known)."""
    serial: int = 0

    def add_adapter(self, folder: Path) -> str:
        """Load the adapter in `folder` next to the others; returns its name."""
        if not any(folder.glob("adapter_model.*")):
            raise ModelError(
                f"adapter: {folder} has no adapter weights (adapter_model.safetensors)",
                field="adapter",
            )
        name = f"adapter-{self.serial}"
        self.serial += 1
        # peft's load_adapter neither switches to the new adapter nor turns disabled layers
        # back on: whatever was active before, the next activate() must set it all again.
        self.active = None
        try:
            if self.peft is None:
                from peft import PeftModel

                self.peft = PeftModel.from_pretrained(
                    self.net, str(folder), adapter_name=name, is_trainable=False
                )
            else:
                self.peft.load_adapter(str(folder), adapter_name=name, is_trainable=False)
        except Exception as e:  # shapes or module names that do not match this base model
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(
                f"adapter: {folder} does not fit this base model ({first}). "
                "Was it trained on another model?",
                field="adapter",
            ) from None
        self.peft.eval()
        return name

    def activate(self, name: str) -> None:
        """Answer with adapter `name` ("" for the base alone); call under `lock`."""
        if self.peft is None or name == self.active:
            return
        if name:
            self.peft.base_model.enable_adapter_layers()
            self.peft.set_adapter(name)
        else:
            self.peft.base_model.disable_adapter_layers()
        self.active = name

    def drop_adapter(self, name: str) -> None:
        """Unload an adapter nobody answers with any more."""
        if self.peft is None or name not in self.peft.peft_config:
            return
        import warnings

        with self.lock, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "adapter X was active which is now deleted"
            if self.active == name:
                self.activate("")
            self.peft.delete_adapter(name)


@dataclass
class ChatModel:
    model: object
    tokenizer: object
    template: ChatTemplate
    name: str
    """A short name: the run's folder name with an adapter, else the model folder's name."""
    base_path: str
    adapter_path: str = ""
    device: str = "cpu"
    quant: str = "none"
    context_length: int | None = None
    stop_ids: set[int] = field(default_factory=set)
    shared: SharedBase | None = None
    """The base weights, possibly shared with another ChatModel (see load_chat_model)."""
    adapter_name: str = ""
    """Which of the shared base's adapters this model answers with ("" for none)."""

    @property
    def lock(self) -> threading.Lock:
        """Held by whoever generates, so one generation at a time runs on the weights."""
        return self.shared.lock

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """The conversation rendered and tokenized exactly as training did.

        A model's own template may refuse a conversation (Gemma's raises "System role not
        supported", Mistral's wants user and assistant turns to alternate): that is the
        caller's to fix, so it comes out as a StudioError naming the messages.
        """
        try:
            from jinja2 import TemplateError
        except ImportError:  # no jinja2, so no tokenizer template to refuse anything
            TemplateError = ()  # noqa: N806
        try:
            text = self.template.prompt(messages)
        except TemplateError as e:
            msg = str(e).strip() or type(e).__name__
            raise StudioError(
                f"messages: the model's chat template refuses this conversation: {msg}",
                field="messages",
            ) from None
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def chat(
        self,
        messages: list[dict],
        settings: GenerationSettings | None = None,
        cancel: CancelToken | None = None,
    ) -> Generation:
        """An answer to `messages` ([{role, content}], the last one usually from the user)."""
        _check_messages(messages)
        return self._generation(
            self.prompt_ids(messages), settings, cancel, self.template.stop_strings
        )

    def complete(
        self,
        prompt: str,
        settings: GenerationSettings | None = None,
        cancel: CancelToken | None = None,
    ) -> Generation:
        """A plain continuation of `prompt` (no chat template), stopping at EOS."""
        ids = self.tokenizer(prompt)["input_ids"]
        return self._generation(ids, settings, cancel, [])

    def _generation(self, ids, settings, cancel, stops) -> Generation:
        self.shared.activate(self.adapter_name)  # the caller holds self.lock
        return Generation(
            self.model,
            self.tokenizer,
            ids,
            settings or GenerationSettings(),
            stop_ids=self.stop_ids,
            stop_strings=stops,
            context_length=self.context_length,
            cancel=cancel,
        )

    def close(self) -> None:
        """Drop the weights (and free GPU memory) now rather than at garbage collection.

        Weights shared with another ChatModel stay for that one; this one's adapter goes.
        """
        if self.shared is not None:
            self.shared.drop_adapter(self.adapter_name)
        self.model = None
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


def _check_messages(messages) -> None:
    if not isinstance(messages, list) or not messages:
        raise StudioError("messages: give at least one message", field="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise StudioError(
                f"messages[{i}]: each message needs a role of system, user or assistant",
                field="messages",
            )
        if not isinstance(m.get("content"), str):
            raise StudioError(f"messages[{i}].content: must be text", field="messages")


def load_chat_model(
    model: str = "",
    adapter: str | Path | None = None,
    *,
    quant: str = "none",
    device: str = "auto",
    dtype: str = "auto",
    template: str = "",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    progress: Progress | None = None,
    share_with: ChatModel | None = None,
) -> ChatModel:
    """Load a model (and adapter) for chat; `progress(done, total)` is called per stage.

    `template` overrides the chat template (chatml, alpaca, llama2 or auto). With
    `share_with` (another loaded ChatModel) on the same base model and settings, the base's
    weights are not loaded again: both answer from one copy, each with its own adapter.
    """
    from studio.core.lora import check_adapter_fits
    from studio.core.models import context_length, is_local, load_model

    report = progress or (lambda done, total: None)
    report(0, 3)
    info = find_adapter(adapter) if adapter else None
    base = model or (info.base_model if info else "")
    if not base:
        raise ModelError("model: no model given; pass --model FOLDER_OR_HUB_ID", field="model.path")
    cfg = ModelConfig(
        path=str(base),
        quant=quant,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        allow_pickle=allow_pickle,
    )
    where = str(Path(base).expanduser().resolve()) if is_local(str(base)) else str(base)
    key = (where, quant, device, dtype, trust_remote_code)
    other = share_with.shared if share_with is not None and share_with.model is not None else None
    # An adapter whose fit cannot be checked before injection (a .bin file) never goes into
    # weights another model answers from: a misfit could leave half of it there.
    checkable = info is None or (info.folder / "adapter_model.safetensors").is_file()
    if other is not None and other.key == key and checkable:
        shared, tokenizer = other, share_with.tokenizer
        base_path, device_name, quant_name = (
            share_with.base_path,
            share_with.device,
            share_with.quant,
        )
    else:
        loaded = load_model(cfg)
        loaded.model.eval()
        shared, tokenizer = SharedBase(key, loaded.model), loaded.tokenizer
        base_path, device_name, quant_name = loaded.path, loaded.device, loaded.quant
    report(1, 3)
    adapter_name = ""
    if info is not None:
        # From the file's header, before anything is injected: a misfit never leaves half an
        # adapter in weights that another chat model is using.
        check_adapter_fits(shared.net, info.folder)
        with shared.lock:
            adapter_name = shared.add_adapter(info.folder)
    report(2, 3)
    tmpl = chat_template(tokenizer, template or (info.template if info else ""))
    if info is not None:
        name = info.folder.name
        if info.run_dir is not None:
            in_checkpoints = info.folder.parent.name == "checkpoints"
            name = (
                f"{info.run_dir.name}/{info.folder.name}" if in_checkpoints else info.run_dir.name
            )
    else:
        name = Path(base_path).name if Path(base_path).exists() else base_path
    chat = ChatModel(
        model=shared.peft if adapter_name else shared.net,
        tokenizer=tokenizer,
        template=tmpl,
        name=name,
        base_path=base_path,
        adapter_path=str(info.folder) if info else "",
        device=device_name,
        quant=quant_name,
        context_length=context_length(shared.net.config.to_dict()),
        stop_ids=_stop_ids(tokenizer, shared.net, tmpl),
        shared=shared,
        adapter_name=adapter_name,
    )
    report(3, 3)
    return chat
