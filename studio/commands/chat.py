"""`studio chat` (being built)."""


def add_parser(sub):
    p = sub.add_parser("chat", help="(being built)")
    p.set_defaults(handler=run)


def run(args) -> int:
    raise SystemExit("studio chat is not available yet")
