"""`studio chat`: talk to a model (and its fine-tuned adapter) in the terminal.

With --prompt it prints one answer and exits; otherwise it is an interactive, multi-turn
chat: /reset clears the conversation, /system TEXT sets the system prompt, /quit exits.
Ctrl-C stops the answer being written (not the chat). The answer streams to stdout; the
speed line goes to stderr so `studio chat --prompt ... > answer.txt` keeps only the answer.
"""

from __future__ import annotations

import sys

HELP = "commands: /reset (new conversation), /system TEXT (set the system prompt), /quit"


def add_model_arguments(p) -> None:
    """Flags shared with `studio serve`."""
    p.add_argument("--model", default="", help="base (or merged) model: a local folder or hub id")
    p.add_argument(
        "--adapter",
        default=None,
        help="a run folder, its adapter/ folder or a checkpoints/step-* folder "
        "(the base model is read from the run when --model is not given)",
    )
    p.add_argument(
        "--quant",
        choices=("none", "8bit", "4bit"),
        default="none",
        help="load the base model in 8 or 4 bits",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    p.add_argument(
        "--template",
        choices=("auto", "chatml", "alpaca", "llama2"),
        default=None,
        help="chat template (default: the one the run trained with, else the model's own)",
    )
    p.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16", "float16"),
        default="auto",
        help="weights' type (auto: bf16 on GPUs that support it, fp16 on other GPUs, fp32 on CPU)",
    )
    p.add_argument(
        "--trust-remote-code", action="store_true", help="run code shipped in the model folder"
    )
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="load pickle-based .bin weights (can run arbitrary code; off by default)",
    )


def add_parser(sub) -> None:
    p = sub.add_parser(
        "chat",
        help="chat with a model or a fine-tuned run in the terminal",
        description="Chat with a model, optionally with a trained adapter applied.",
    )
    add_model_arguments(p)
    p.add_argument("--prompt", default=None, help="answer this one message and exit")
    p.add_argument("--system", default="", help="system prompt")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument(
        "--temperature", type=float, default=0.7, help="0 for greedy (deterministic) answers"
    )
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--quant-cost",
        action="store_true",
        help="measure the run's validation perplexity with the base unquantized, in 8 and in "
        "4 bits, print a table and exit (needs --adapter in a run folder)",
    )
    p.set_defaults(handler=run)


class DownloadLine:
    """A hub download's progress: one line redrawn on a terminal, a line every 2 s otherwise."""

    def __init__(self, stream):
        self.stream, self.tty, self.last = stream, stream.isatty(), 0.0

    def __call__(self, progress) -> None:
        import time

        finished = progress.done >= progress.total
        if self.tty:
            self.stream.write("\r\033[K" + progress.text() + ("\n" if finished else ""))
        elif time.monotonic() - self.last > 2 or finished:
            self.last = time.monotonic()
            self.stream.write(progress.text() + "\n")
        self.stream.flush()


def download_base(args, out) -> None:
    """A hub id not whole in the cache (--model, or the run's base) is downloaded first,
    showing its progress; Ctrl-C stops it (the files fetched whole stay in the cache)."""
    from studio.core.errors import StudioError
    from studio.core.hub import ensure_model, is_hub_id
    from studio.core.infer import find_adapter

    base = args.model
    if not base and args.adapter:
        try:
            base = find_adapter(args.adapter).base_model
        except StudioError:
            return  # said again, in its place, by the load
    if is_hub_id(base):
        ensure_model(
            base,
            allow_pickle=args.allow_pickle,
            trust_remote_code=args.trust_remote_code,
            on_progress=DownloadLine(out),
        )


def load(args, out=None):
    from studio.core.infer import load_chat_model

    out = out or sys.stderr
    what = args.model or "the run's base model"
    print(
        f"loading {what}{' + ' + str(args.adapter) if args.adapter else ''}...",
        file=out,
        flush=True,
    )
    download_base(args, out)
    return load_chat_model(
        args.model,
        args.adapter,
        quant=args.quant,
        device=args.device,
        dtype=args.dtype,
        template=args.template or "",
        trust_remote_code=args.trust_remote_code,
        allow_pickle=args.allow_pickle,
    )


def answer(model, messages, settings, out=None) -> str:
    """Stream one answer to `out`; Ctrl-C stops it. Returns the text written."""
    from studio.core.generation import CancelToken

    out = out or sys.stdout
    gen = model.chat(messages, settings, CancelToken())
    try:
        for piece in gen:
            out.write(piece)
            out.flush()
    except KeyboardInterrupt:
        gen.stop()
        out.write(" [stopped]")
    out.write("\n")
    out.flush()
    print(
        f"({gen.completion_tokens} tokens, {gen.tokens_per_s:.1f} tokens/s, "
        f"first token after {gen.ttft_s:.2f} s)",
        file=sys.stderr,
        flush=True,
    )
    return gen.text


def run(args) -> int:
    from studio.core.errors import StudioError
    from studio.core.generation import GenerationSettings

    settings = GenerationSettings(
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        max_new_tokens=args.max_new_tokens,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
    )
    if args.quant_cost:
        return quant_cost(args)
    model = load(args)
    system = args.system
    if args.prompt is not None:
        answer(model, _start(system) + [{"role": "user", "content": args.prompt}], settings)
        return 0
    print(f"chatting with {model.name} (template {model.template.name}). {HELP}", file=sys.stderr)
    history = _start(system)
    while True:
        try:
            line = input("> ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        text = line.strip()
        if not text:
            continue
        if text in ("/quit", "/exit"):
            return 0
        if text == "/reset":
            history = _start(system)
            print("(new conversation)", file=sys.stderr)
            continue
        if text.startswith("/system"):
            system = text[len("/system") :].strip()
            history = _start(system) + [m for m in history if m["role"] != "system"]
            print(f"(system prompt {'set' if system else 'cleared'})", file=sys.stderr)
            continue
        if text.startswith("/"):
            print(HELP, file=sys.stderr)
            continue
        history.append({"role": "user", "content": line})
        try:
            reply = answer(model, history, settings)
        except StudioError as e:
            # E.g. the conversation outgrew the context, or the model's template refuses it:
            # say so and carry on without this message (/reset or a shorter one may fit).
            history.pop()
            print(f"error: {e.message}", file=sys.stderr)
            print("(message dropped; type /reset for a new conversation)", file=sys.stderr)
            continue
        history.append({"role": "assistant", "content": reply})


def quant_cost(args, out=None) -> int:
    """Print what 8 and 4 bits cost the run in validation perplexity and memory."""
    import warnings

    from studio.core.errors import StudioError
    from studio.core.quant_cost import megabytes, perplexity_by_quant, relative

    out = out or sys.stdout
    if not args.adapter:
        raise StudioError(
            "--quant-cost: give the run to measure with --adapter RUN", field="adapter"
        )
    # peft's loading trips a transformers deprecation warning that says nothing to the user.
    warnings.filterwarnings("ignore", message=".*will be removed in v6", category=FutureWarning)
    print(f"measuring {args.adapter} unquantized, in 8 and in 4 bits...", file=sys.stderr)
    results = perplexity_by_quant(
        args.adapter,
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
        allow_pickle=args.allow_pickle,
    )
    first = results[0]
    print(
        f"{'weights':<8} {'perplexity':>10} {'vs ' + first.label:>10} {'loss':>7} "
        f"{'memory':>10} {'time':>7}",
        file=out,
    )
    for r in results:
        change = "" if r is first else relative(r.perplexity, first.perplexity)
        print(
            f"{r.label:<8} {r.perplexity:>10.3f} {change:>10} {r.loss:>7.4f} "
            f"{megabytes(r.memory_mb):>10} {r.seconds:>6.1f}s",
            file=out,
        )
    what = "training" if first.note else "validation"
    print(f"({first.examples} {what} examples, {first.tokens} answer tokens)", file=out)
    if first.note:
        print(f"note: {first.note}", file=out)
    return 0


def _start(system: str) -> list[dict]:
    return [{"role": "system", "content": system}] if system else []
