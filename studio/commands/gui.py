"""`studio gui` (being built)."""


def add_parser(sub):
    p = sub.add_parser("gui", help="(being built)")
    p.set_defaults(handler=run)


def run(args) -> int:
    raise SystemExit("studio gui is not available yet")
