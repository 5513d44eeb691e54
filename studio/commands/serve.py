"""`studio serve` (being built)."""


def add_parser(sub):
    p = sub.add_parser("serve", help="(being built)")
    p.set_defaults(handler=run)


def run(args) -> int:
    raise SystemExit("studio serve is not available yet")
