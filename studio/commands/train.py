"""`studio train` (being built)."""


def add_parser(sub):
    p = sub.add_parser("train", help="(being built)")
    p.set_defaults(handler=run)


def run(args) -> int:
    raise SystemExit("studio train is not available yet")
