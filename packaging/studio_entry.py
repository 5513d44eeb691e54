"""The frozen app's entry point (both `studio` and `studio-cli` in the PyInstaller bundle).

In a bundle `sys.executable` is this binary, not a Python interpreter, yet Studio starts its
children as `sys.executable -m studio train --config RUN/run.yaml` (the Train page),
`-m studio export ...` (the Export page), `-m studio.core.export.llama_probe ...` and
`-m torch.distributed.run ... -m studio train` (several processes; torchrun adds `-u`). So the
binary accepts the interpreter's spelling too: leading `-u`/`-B`/`-E`/`-s`/`-O` are skipped
(`-u` makes the output unbuffered), `-m studio ARGS` is `studio ARGS`, and `-m MODULE ARGS`
runs that bundled module as `__main__`. Anything else is the `studio` command line.
"""

from __future__ import annotations

import multiprocessing
import os
import sys

PYTHON_FLAGS = ("-u", "-B", "-E", "-s", "-O")


def split_python_argv(argv: list[str]) -> tuple[str | None, list[str], bool]:
    """(module to run or None for the studio CLI, its arguments, whether `-u` was given)."""
    i = 0
    while i < len(argv) and argv[i] in PYTHON_FLAGS:
        i += 1
    unbuffered = "-u" in argv[:i]
    if i < len(argv) - 1 and argv[i] == "-m":
        module = argv[i + 1]
        return (None if module == "studio" else module), argv[i + 2 :], unbuffered
    return None, argv[i:], unbuffered


def use_console_binary_for_children() -> None:
    """Children started from the windowed `studio` run in the console `studio-cli` beside it:
    on Windows a windowed binary has no stdout for the run log (on Linux they are alike)."""
    if not getattr(sys, "frozen", False):
        return
    here = os.path.dirname(sys.executable)
    suffix = ".exe" if os.name == "nt" else ""
    cli = os.path.join(here, "studio-cli" + suffix)
    if os.path.isfile(cli):
        sys.executable = cli


def main() -> None:
    multiprocessing.freeze_support()  # a multiprocessing child re-enters here; it returns there
    module, args, unbuffered = split_python_argv(sys.argv[1:])
    if unbuffered:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.reconfigure(write_through=True)
    use_console_binary_for_children()
    if module is None:
        from studio.cli import main as studio_main

        sys.exit(studio_main(args))
    import runpy

    sys.argv = [sys.executable, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
