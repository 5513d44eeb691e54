"""`studio gui` (and `studio` alone): open the desktop app."""


def add_parser(sub):
    p = sub.add_parser("gui", help="open the desktop app (the default command)")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="open the window, print the time to its first paint (from process start) and exit",
    )
    p.add_argument(
        "project",
        nargs="?",
        help="a project folder to open (default: the last one used, or the bundled demo), or "
        "a data file to import on the Data page",
    )
    p.set_defaults(handler=run)


def run(args) -> int:
    from studio.gui.app import main

    return main(smoke=args.smoke, project=args.project)
