"""`studio data` (being built)."""


def add_parser(sub):
    p = sub.add_parser("data", help="(being built)")
    p.set_defaults(handler=run)


def run(args) -> int:
    raise SystemExit("studio data is not available yet")
