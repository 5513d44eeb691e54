"""Fetch a hub model's files into the Hugging Face cache, with progress and a cancel.

`ensure_model(id)` returns the cached snapshot folder of a hub id, downloading first what
the loader needs when the cache does not hold it whole: config and tokenizer files, then
the safetensors weights (pickle `.bin` weights only when the caller allows pickle, `.py`
files only with trust_remote_code). Progress is real bytes, reported through
`on_progress(DownloadProgress)`; a `cancel` (a threading.Event or a CancelToken) stops the
download within one chunk and raises DownloadCancelled.

What a cancelled download leaves: every file fetched whole stays in the cache and is not
fetched again. The file in flight is fetched again from its start: huggingface_hub (2.x)
writes it to a temporary file of its own and deletes that file when the download fails.

No Qt here; huggingface_hub is imported inside the functions.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from studio.core.errors import ModelError

CHUNK_BYTES = 1024 * 1024
"""Bytes between progress reports (and cancel checks) of a plain HTTP download.
huggingface_hub reads 10 MB at a time, a long wait for a cancel on a slow line."""

REPORT_EVERY_S = 0.1
"""Progress is reported at most this often (and at each file's start and end)."""

SMALL_FILES = ("*.json", "*.jinja", "*.txt", "*.model", "*.tiktoken")
"""Config, tokenizer and chat template files (top level of the repository only)."""

SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_INDEX = "pytorch_model.bin.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


@dataclass
class DownloadProgress:
    repo_id: str
    done: int
    """Bytes of the chosen files in the cache so far (those fetched before included)."""
    total: int
    """Bytes of all the chosen files."""
    file: str = ""
    """The file being fetched now."""
    files_done: int = 0
    files_total: int = 0

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    def text(self) -> str:
        """One line for a status bar or a terminal."""
        where = f": {self.file}" if self.file else ""
        return f"Downloading {self.repo_id}{where}, {bytes_text(self.done, self.total)}"


def bytes_text(done: int, total: int) -> str:
    """`120.0 MB of 1.2 GB (10%)`."""
    from studio.core.model_info import human_bytes

    percent = 100 * done / total if total else 0
    return f"{human_bytes(done)} of {human_bytes(total)} ({percent:.0f}%)"


class DownloadCancelled(ModelError):
    """The user stopped a download; the files fetched whole stay in the cache."""

    def __init__(self, repo_id: str):
        super().__init__(
            f"Download of {repo_id} cancelled. The files fetched whole stay in the Hugging Face "
            "cache; the next try fetches only the rest.",
            field="model.path",
        )


def is_hub_id(path: str) -> bool:
    """`owner/name` that is not a folder here (as models.is_local sees it)."""
    from studio.core.models import is_local

    p = str(path).strip()
    return bool(p) and not is_local(p) and p.count("/") == 1 and all(p.split("/"))


# --- what the loader needs ----------------------------------------------------------------


def _top_level(names) -> list[str]:
    return [n for n in names if "/" not in n]


def _matches(name: str, patterns) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in patterns)


def small_files(names, trust_remote_code: bool = False) -> list[str]:
    """The config, tokenizer and template files among a repository's files."""
    patterns = SMALL_FILES + (("*.py",) if trust_remote_code else ())
    return sorted(n for n in _top_level(names) if _matches(n, patterns))


def _index_shards(index_file: Path) -> list[str] | None:
    try:
        shards = json.loads(index_file.read_text(encoding="utf-8"))["weight_map"].values()
        return sorted({s for s in shards if isinstance(s, str)})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def weight_files(repo_id: str, names, allow_pickle: bool, read_index) -> list[str]:
    """The weight files the loader reads, as models.check_local_folder would pick them.

    `read_index(name)` gives the local path of an index file (fetching it if need be)."""
    names = set(_top_level(names))
    safetensors = sorted(n for n in names if n.endswith(".safetensors"))
    if safetensors:
        if SAFETENSORS_INDEX in names:
            shards = _index_shards(read_index(SAFETENSORS_INDEX))
            if shards and set(shards) <= names:
                return shards
        # A repository may ship another copy too (Mistral's consolidated.safetensors).
        return ["model.safetensors"] if "model.safetensors" in names else safetensors
    pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
    if pickles and not allow_pickle:
        raise ModelError(
            f"model.path: {repo_id} holds only pickle-based weights (.bin), which can run "
            "arbitrary code when loaded; pass --allow-pickle if you trust its source",
            field="model.allow_pickle",
        )
    if pickles:
        if PICKLE_INDEX in names:
            shards = _index_shards(read_index(PICKLE_INDEX))
            if shards and set(shards) <= names:
                return shards
        return ["pytorch_model.bin"] if "pytorch_model.bin" in names else pickles
    raise ModelError(f"model.path: {repo_id} has no weights (*.safetensors)", field="model.path")


def _complete(folder: Path, weights: bool, allow_pickle: bool, trust_remote_code: bool) -> bool:
    """Whether a snapshot folder holds all the loader reads (no network)."""
    from studio.core.model_info import read_json_object
    from studio.core.models import TOKENIZER_FILES

    if not (folder / "config.json").is_file():
        return False
    if not any((folder / n).is_file() for n in TOKENIZER_FILES):
        return False
    if trust_remote_code:
        auto_map = read_json_object(folder / "config.json").get("auto_map")
        refs = auto_map.values() if isinstance(auto_map, dict) else ()
        for ref in refs:
            for r in ref if isinstance(ref, list) else [ref]:
                if isinstance(r, str) and "--" not in r and "." in r:
                    if not (folder / (r.rsplit(".", 1)[0] + ".py")).is_file():
                        return False
    if not weights:
        return True
    names = [p.name for p in folder.iterdir()]
    try:
        wanted = weight_files(folder.name, names, allow_pickle, lambda n: folder / n)
    except ModelError:
        return False
    return all((folder / n).is_file() for n in wanted)


def cached_snapshot(
    repo_id: str,
    *,
    weights: bool = True,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
) -> Path | None:
    """The cached snapshot folder of repo_id's main revision when it holds all the loader
    needs (the weights too, unless weights=False); None otherwise. No network."""
    from huggingface_hub import constants, try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json", cache_dir=constants.HF_HUB_CACHE)
    if not isinstance(found, str):
        return None
    folder = Path(found).parent
    return folder if _complete(folder, weights, allow_pickle, trust_remote_code) else None


# --- downloading ----------------------------------------------------------------------------


def _cancel_check(cancel) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if hasattr(cancel, "is_set"):  # threading.Event
        return cancel.is_set
    return lambda: bool(cancel.cancelled)  # a CancelToken


class _Tracker:
    """Sums the bytes of one download, reports them, and raises when cancelled."""

    def __init__(self, repo_id: str, total: int, files_total: int, on_progress, cancelled):
        self.progress = DownloadProgress(repo_id, 0, total, files_total=files_total)
        self.on_progress = on_progress
        self.cancelled = cancelled
        self.callback_error: BaseException | None = None
        self._last = 0.0

    def check(self) -> None:
        if self.cancelled():
            raise DownloadCancelled(self.progress.repo_id)

    def add(self, n: int, *, force: bool = False) -> None:
        self.check()
        self.progress.done += n
        now = time.monotonic()
        if self.on_progress is not None and (force or now - self._last >= REPORT_EVERY_S):
            self._last = now
            snapshot = DownloadProgress(**vars(self.progress))
            try:
                self.on_progress(snapshot)
            except BaseException as e:  # the caller's own way to stop (workers.Cancelled)
                self.callback_error = e
                raise

    def bar_class(self):
        """A class huggingface_hub takes for tqdm: http_get and xet_get call update(n)."""
        tracker = self

        class Bar:
            def __init__(self, *args, total=None, initial=0, **kwargs):
                self.n, self.total = initial or 0, total

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def update(self, n=1):
                n = int(n or 0)
                self.n += n
                tracker.add(n)

            def update_transfer(self, n=1):
                # Network bytes of a xet download, counted by update() once written; with this
                # method xet_get shares one bar for both instead of making a second one.
                tracker.check()

            def __getattr__(self, name):  # set_postfix_str, refresh, close...: not shown
                return lambda *args, **kwargs: None

        return Bar


def _hub_error(repo_id: str, error: Exception) -> ModelError:
    """One sentence for a failed hub call."""
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        import httpx2

        network = (httpx2.TransportError,)
    except ImportError:  # an older huggingface_hub on httpx or requests
        network = ()
    if isinstance(
        error, (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, *network)
    ):
        return ModelError(
            f"model.path: could not fetch {repo_id}: the Hugging Face hub cannot be reached "
            "from this computer, so choose a model folder or a model already downloaded "
            "(Settings lists them).",
            field="model.path",
        )
    if isinstance(error, GatedRepoError):
        return ModelError(
            f"model.path: {repo_id} is gated: accept its terms on huggingface.co, then log in here with "
            "`hf auth login`.",
            field="model.path",
        )
    if isinstance(error, RepositoryNotFoundError):
        return ModelError(
            f"model.path: {repo_id} is not a model on the Hugging Face hub (or it is private: log in with "
            "`hf auth login`). Check the id, or give a local folder.",
            field="model.path",
        )
    if isinstance(error, RevisionNotFoundError):
        return ModelError(
            f"model.path: {repo_id}: no such revision on the hub.", field="model.path"
        )
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ModelError(
        f"model.path: could not fetch {repo_id} from the Hugging Face hub: {first}",
        field="model.path",
    )


def _write_ref(repo_id: str, revision: str, commit: str) -> None:
    """Point refs/<revision> at commit, as snapshot_download does, so that try_to_load_from_cache
    (and an offline from_pretrained) find the files fetched by commit hash."""
    from huggingface_hub import constants

    refs = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    ref = refs / revision
    if revision == commit or ref.is_file() and ref.read_text().strip() == commit:
        return
    tmp = refs / f".{revision}.{os.getpid()}.tmp"
    tmp.write_text(commit)
    os.replace(tmp, ref)


def _abort_xet_when_cancelled(cancelled, finished: threading.Event) -> None:
    """A xet download runs in Rust and may swallow the exception raised from its progress
    callback: abort its session when cancelled (huggingface_hub's own Ctrl+C path)."""
    while not finished.wait(0.2):
        if cancelled():
            from huggingface_hub.utils._xet import abort_xet_session

            abort_xet_session()
            return


def download_model(
    repo_id: str,
    *,
    revision: str = "main",
    weights: bool = True,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    on_progress: Callable[[DownloadProgress], None] | None = None,
    cancel=None,
) -> Path:
    """Fetch what the loader needs of repo_id into the cache; return the snapshot folder.

    Files already cached are not fetched again (their bytes count as done at once). Raises
    DownloadCancelled when `cancel` is set, ModelError when the hub cannot be reached or
    the repository cannot be used; an exception raised by on_progress propagates as is.
    """
    from huggingface_hub import HfApi, constants, hf_hub_download, try_to_load_from_cache

    cancelled = _cancel_check(cancel)
    # Bytes between progress reports: read by http_get at each call (a module constant).
    constants.DOWNLOAD_CHUNK_SIZE = min(constants.DOWNLOAD_CHUNK_SIZE, CHUNK_BYTES)
    if cancelled():
        raise DownloadCancelled(repo_id)
    try:
        info = HfApi().model_info(repo_id, revision=revision, files_metadata=True)
    except Exception as e:
        raise _hub_error(repo_id, e) from None
    commit = info.sha or revision
    sizes = {s.rfilename: s.size or 0 for s in info.siblings or []}
    if "config.json" not in sizes:
        raise ModelError(
            f"model.path: {repo_id} has no config.json; it is not a Hugging Face model",
            field="model.path",
        )
    _write_ref(repo_id, revision, commit)  # first: a cancelled download's files are found
    # Silent until the total is known: the weights' index is read first to pick the shards.
    tracker = _Tracker(repo_id, 0, 0, None, cancelled)

    def fetch(name: str) -> Path:
        tracker.progress.file = name
        cached = try_to_load_from_cache(repo_id, name, revision=commit)
        if isinstance(cached, str):
            tracker.progress.files_done += 1
            tracker.add(sizes.get(name, 0), force=True)
        else:
            try:
                cached = hf_hub_download(
                    repo_id, name, revision=commit, tqdm_class=tracker.bar_class()
                )
            except DownloadCancelled:
                raise
            except Exception as e:
                if e is tracker.callback_error:
                    raise
                if cancelled():
                    raise DownloadCancelled(repo_id) from None
                raise _hub_error(repo_id, e) from None
            tracker.progress.files_done += 1
            tracker.add(0, force=True)
        return Path(cached)

    small = small_files(sizes, trust_remote_code)
    wanted = weight_files(repo_id, sizes, allow_pickle, fetch) if weights else []
    files = small + [w for w in wanted if w not in small]
    tracker.progress = DownloadProgress(
        repo_id, 0, sum(sizes.get(n, 0) for n in files), files_total=len(files)
    )
    tracker.on_progress = on_progress
    finished = threading.Event()
    if importlib.util.find_spec("hf_xet") is not None:
        # Stopped by `cancel`, or by the caller's progress callback raising (workers.Cancelled).
        def stopped() -> bool:
            return cancelled() or tracker.callback_error is not None

        threading.Thread(
            target=_abort_xet_when_cancelled, args=(stopped, finished), daemon=True
        ).start()
    try:
        tracker.add(0, force=True)
        folder = None
        for name in files:
            tracker.check()
            folder = fetch(name).parent
    finally:
        finished.set()
    return folder


def ensure_model(
    path: str,
    *,
    weights: bool = True,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    on_progress: Callable[[DownloadProgress], None] | None = None,
    cancel=None,
) -> str:
    """A local folder for `path`: itself when it is not a hub id, else the cached snapshot
    (downloaded first when the cache does not hold all the loader needs)."""
    if not is_hub_id(path):
        return path
    found = cached_snapshot(
        path, weights=weights, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code
    )
    if found is not None:
        return str(found)
    return str(
        download_model(
            path,
            weights=weights,
            allow_pickle=allow_pickle,
            trust_remote_code=trust_remote_code,
            on_progress=on_progress,
            cancel=cancel,
        )
    )


def download_events(
    repo_id: str,
    *,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    cancel=None,
    every_s: float = 1.0,
) -> Iterator:
    """ensure_model as events for a run's stream: a Log when a download starts, Progress
    (stage "download ...", done/total in bytes) at most every `every_s` seconds, a Log at
    the end. Nothing when the cache holds the model already."""
    from studio.core.events import Log, Progress
    from studio.core.model_info import human_bytes

    if not is_hub_id(repo_id) or cached_snapshot(
        repo_id, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code
    ):
        return
    reports: queue.Queue = queue.Queue()
    outcome: dict = {}

    def work() -> None:
        try:
            outcome["folder"] = download_model(
                repo_id,
                allow_pickle=allow_pickle,
                trust_remote_code=trust_remote_code,
                on_progress=reports.put,
                cancel=cancel,
            )
        except BaseException as e:  # raised again in the generator's thread
            outcome["error"] = e
        finally:
            reports.put(None)

    yield Log(f"downloading {repo_id} from the Hugging Face hub")
    threading.Thread(target=work, name="studio-download", daemon=True).start()
    last, sent = None, 0.0
    while (p := reports.get()) is not None:
        last = p
        if time.monotonic() - sent >= every_s or p.done >= p.total:
            sent = time.monotonic()
            where = f": {p.file}" if p.file else ""
            yield Progress(done=p.done, total=p.total, stage=f"download {repo_id}{where}")
    if "error" in outcome:
        raise outcome["error"]
    size = human_bytes(last.total) if last is not None else "?"
    yield Log(f"downloaded {repo_id} ({size}) to {outcome['folder']}")
