"""The desktop app (PySide6). Importing this package is cheap: no torch, no transformers.

Heavy libraries are imported only inside functions that run on worker threads
(`studio.gui.workers`), so the window paints before torch is loaded.
"""
