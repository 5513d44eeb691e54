"""`studio desktop install|uninstall` (also `studio --install-desktop-entry` and
`--uninstall-desktop-entry`): the Linux menu entry and icons, in the user's data dir."""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "desktop",
        help="add Studio to the Linux desktop menu, or remove it "
        "(also --install-desktop-entry, --uninstall-desktop-entry)",
    )
    p.add_argument("action", choices=("install", "uninstall"))
    p.set_defaults(handler=run)


def run(args) -> int:
    from studio import desktop

    if args.action == "install":
        files = desktop.install()
        print(f"Installed the menu entry and {len(files) - 1} icons:")
        for path in files:
            print(f"  {path}")
        return 0
    removed = desktop.uninstall()
    if not removed:
        print(f"No Studio menu entry was installed under {desktop.data_home()}.")
    for path in removed:
        print(f"removed {path}")
    return 0
