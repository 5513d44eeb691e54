"""The `studio` command. `studio` alone opens the app.

Each subcommand lives in `studio/commands/<name>.py` and is imported only when used, so
`studio gui` does not pay for torch before the window shows.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("gui", "data", "train", "chat", "serve", "export", "eval", "selftest", "desktop")

# Whole-program options that stand in for a command (`studio --selftest`).
OPTION_COMMANDS = {
    "--selftest": ["selftest"],
    "--install-desktop-entry": ["desktop", "install"],
    "--uninstall-desktop-entry": ["desktop", "uninstall"],
}


def normalize_argv(argv: list[str]) -> list[str]:
    """Accept `--lora_rank` as well as `--lora-rank` (long options only, value untouched)."""
    out = []
    for arg in argv:
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg[2:].partition("=")
            arg = "--" + name.replace("_", "-") + eq + value
        out.append(arg)
    return out


def command_argv(argv: list[str]) -> list[str]:
    """`studio` alone opens the app; `studio FILE` opens it on a data file or project folder;
    `studio --selftest` and the desktop-entry options are commands spelled as options."""
    if not argv:
        return ["gui"]
    if argv[0] in OPTION_COMMANDS:
        return OPTION_COMMANDS[argv[0]] + argv[1:]
    if len(argv) == 1 and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        from pathlib import Path

        if Path(argv[0]).exists():  # a subcommand always wins over a file of the same name
            return ["gui", argv[0]]
    return argv


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="studio",
        description="Fine-tune language models with LoRA/QLoRA: desktop app, CLI and API.",
        epilog="`studio FILE` opens the app with a data file imported. Also: --selftest (check "
        "the install), --install-desktop-entry, --uninstall-desktop-entry (Linux menus).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"studio.commands.{name}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = normalize_argv(list(sys.argv[1:] if argv is None else argv))
    argv = command_argv(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from studio.core.errors import StudioError

    try:
        return int(args.handler(args) or 0)
    except StudioError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    sys.exit(main())


def ds_train_entry() -> None:
    """`ds_train --model M --data D --lora_rank 16 --gpus 4`: `studio train` by another name."""
    sys.exit(main(["train", *sys.argv[1:]]))


if __name__ == "__main__":
    entry()
