"""One module per `studio` subcommand; each has `add_parser(subparsers)` and `run(args) -> int`."""
