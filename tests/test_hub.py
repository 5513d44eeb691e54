"""Hub downloads: real bytes of progress, a prompt cancel, a cache the next try reuses, and
one sentence when the hub cannot be reached. All against a fake hub on loopback
(tests/fake_hub.py); no network."""

import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from studio.core import hub
from studio.core.config import ModelConfig
from studio.core.errors import ModelError
from tests.fake_hub import FakeHub, serving_hub

REPO = "tiny/llama"


@pytest.fixture
def fast_reports(monkeypatch):
    """Small chunks and every report delivered, so a 0.5 MB file shows its progress."""
    monkeypatch.setattr(hub, "CHUNK_BYTES", 16 * 1024)
    monkeypatch.setattr(hub, "REPORT_EVERY_S", 0.0)


@pytest.fixture
def served(tiny_model, tmp_path, monkeypatch, fast_reports):
    with serving_hub(FakeHub(REPO, tiny_model), monkeypatch, tmp_path / "hf-cache") as fake:
        yield fake


def test_progress_is_real_bytes_up_to_the_total_and_the_model_loads(served, tiny_model):
    from studio.core.models import load_model, load_tokenizer

    seen = []
    folder = hub.download_model(REPO, on_progress=seen.append)

    wanted = ["chat_template.jinja", "config.json", "generation_config.json", "tokenizer.json",
              "tokenizer_config.json", "model.safetensors"]  # fmt: skip
    total = sum((tiny_model / n).stat().st_size for n in wanted)
    assert sorted(p.name for p in folder.iterdir()) == sorted(wanted)
    assert all(p.total == total for p in seen)
    dones = [p.done for p in seen]
    assert dones == sorted(dones) and dones[0] == 0 and dones[-1] == total
    # Within the weights file itself: reports every chunk, not one tick per file.
    inside = [p.done for p in seen if p.file == "model.safetensors" and 0 < p.done < total]
    assert len(inside) >= 10
    assert seen[-1].files_done == seen[-1].files_total == len(wanted)
    assert "100%" in seen[-1].text() and REPO in seen[-1].text()

    # The loader reads it from the cache now: no request reaches the hub.
    before = len(served.requests)
    loaded = load_model(ModelConfig(path=REPO, device="cpu"))
    assert loaded.path == REPO and loaded.model.config._name_or_path == REPO
    assert loaded.tokenizer.decode(loaded.tokenizer.encode("Hello, how are you")) == (
        "Hello, how are you"
    )
    assert load_tokenizer(REPO).eos_token == "<|im_end|>"
    assert len(served.requests) == before


def test_load_model_downloads_a_missing_model_with_progress(served):
    from studio.core.models import load_model

    seen = []
    loaded = load_model(ModelConfig(path=REPO, device="cpu"), on_download=seen.append)
    assert loaded.path == REPO
    assert seen and seen[-1].done == seen[-1].total > 500_000
    assert served.gets("model.safetensors") == 1


def test_cancel_mid_file_is_prompt_and_the_next_try_reuses_the_cache(served, tmp_path):
    served.slow = ("model.safetensors", 16 * 1024, 0.05)  # about 1.7 s for the whole file
    cancel = threading.Event()
    set_at = []

    def on_progress(p):
        if p.file == "model.safetensors" and p.done > 100_000 and not cancel.is_set():
            set_at.append(time.monotonic())
            cancel.set()

    with pytest.raises(hub.DownloadCancelled, match="cancelled") as caught:
        hub.download_model(REPO, on_progress=on_progress, cancel=cancel)
    assert time.monotonic() - set_at[0] < 1.0
    assert caught.value.field == "model.path"
    cache = tmp_path / "hf-cache"
    assert not list(cache.rglob("*.incomplete"))  # nothing half-written is left behind
    # The small files came whole and stay; the weights are not there.
    assert hub.cached_snapshot(REPO, weights=False) is not None
    assert hub.cached_snapshot(REPO) is None

    served.slow = None
    seen = []
    folder = hub.download_model(REPO, on_progress=seen.append)
    assert (folder / "model.safetensors").is_file()
    assert served.gets("config.json") == 1 and served.gets("tokenizer.json") == 1
    assert served.gets("model.safetensors") == 2
    # Files already cached count as done at once; the total is the same as a fresh download.
    assert seen[-1].done == seen[-1].total
    assert hub.cached_snapshot(REPO) == folder


def test_a_cancel_before_the_start_fetches_nothing(served):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(hub.DownloadCancelled):
        hub.download_model(REPO, cancel=cancel)
    assert served.requests == []


def test_an_exception_from_the_progress_callback_propagates(served):
    class Stop(Exception):
        pass

    def on_progress(p):
        if p.file == "model.safetensors" and p.done:
            raise Stop()

    with pytest.raises(Stop):
        hub.download_model(REPO, on_progress=on_progress)


def _repo_folder(tmp_path: Path, tiny_model: Path, weights: dict[str, bytes]) -> Path:
    folder = tmp_path / "repo"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model / name, folder / name)
    for name, data in weights.items():
        (folder / name).write_bytes(data)
    return folder


def test_sharded_weights_fetch_the_index_shards_only(tiny_model, tmp_path, monkeypatch):
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors",
                            "b": "model-00002-of-00002.safetensors"}}  # fmt: skip
    folder = _repo_folder(
        tmp_path,
        tiny_model,
        {
            "model.safetensors.index.json": json.dumps(index).encode(),
            "model-00001-of-00002.safetensors": b"1" * 3000,
            "model-00002-of-00002.safetensors": b"2" * 4000,
            "consolidated.safetensors": b"3" * 7000,  # another copy the loader never reads
            "README.md": b"# a model card",
        },
    )
    with serving_hub(FakeHub("org/sharded", folder), monkeypatch, tmp_path / "cache") as fake:
        seen = []
        got = hub.download_model("org/sharded", on_progress=seen.append)
    names = {p.name for p in got.iterdir()}
    assert "model-00002-of-00002.safetensors" in names
    assert "consolidated.safetensors" not in names and "README.md" not in names
    assert fake.gets("consolidated.safetensors") == 0
    assert fake.gets("model.safetensors.index.json") == 1  # read once, to pick the shards
    assert seen[-1].total == sum(
        (folder / n).stat().st_size for n in names
    )  # the bytes of exactly what was fetched


def test_pickle_weights_are_refused_before_any_is_fetched(tiny_model, tmp_path, monkeypatch):
    folder = _repo_folder(tmp_path, tiny_model, {"pytorch_model.bin": b"\x80" * 5000})
    with serving_hub(FakeHub("org/pickled", folder), monkeypatch, tmp_path / "cache") as fake:
        with pytest.raises(ModelError, match="pickle") as caught:
            hub.download_model("org/pickled")
        assert caught.value.field == "model.allow_pickle"
        assert fake.gets("pytorch_model.bin") == 0
        got = hub.download_model("org/pickled", allow_pickle=True)
    assert (got / "pytorch_model.bin").stat().st_size == 5000


def test_an_unknown_repository_is_one_sentence(served):
    with pytest.raises(ModelError, match="is not a model on the Hugging Face hub"):
        hub.download_model("nobody/nothing")


def test_offline_a_hub_id_gives_one_clear_sentence(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from studio.core.models import load_model

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError) as caught:
        load_model(ModelConfig(path="some/model", device="cpu"))
    assert "cannot be reached from this computer" in caught.value.message
    assert "\n" not in caught.value.message

    # A hub that does not answer at all (nothing listens on the port): the same sentence.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ModelError, match="cannot be reached from this computer"):
        hub.download_model("some/model")


def test_download_events_for_a_run(served):
    from studio.core.events import Log, Progress

    events = list(hub.download_events(REPO, every_s=0.0))
    assert isinstance(events[0], Log) and "downloading tiny/llama" in events[0].message
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress and progress[-1].done == progress[-1].total > 500_000
    assert all(e.stage.startswith("download tiny/llama") for e in progress)
    assert isinstance(events[-1], Log) and events[-1].message.startswith("downloaded tiny/llama")
    # Cached now: nothing to say.
    assert list(hub.download_events(REPO)) == []


def test_is_hub_id(tmp_path):
    assert hub.is_hub_id("Qwen/Qwen2.5-0.5B")
    assert not hub.is_hub_id(str(tmp_path))
    assert not hub.is_hub_id("./a/b") and not hub.is_hub_id("a/b/c") and not hub.is_hub_id("a")
    assert not hub.is_hub_id("/x") and not hub.is_hub_id("a/")


def test_a_training_run_on_a_hub_id_downloads_first_with_byte_progress(served, tmp_path):
    import io

    from studio.commands.train import Progress
    from studio.core.events import read_events
    from studio.core.train import run_training
    from tests.test_train import config, write_data

    cfg = config(REPO, write_data(tmp_path / "data.jsonl", 8), tmp_path / "run", max_steps=2)
    shown = io.StringIO()
    last = run_training(cfg, on_event=Progress(stream=shown))
    assert last.type == "done" and last.status == "completed"
    events = read_events(tmp_path / "run" / "events.jsonl")
    kinds = [e.type for e in events]
    downloads = [e for e in events if e.type == "progress"]
    assert downloads and kinds.index("progress") < kinds.index("start")
    assert downloads[-1].done == downloads[-1].total > 500_000
    assert "downloaded tiny/llama" in shown.getvalue()
    total = hub.bytes_text(downloads[-1].total, downloads[-1].total)
    assert f"download tiny/llama: model.safetensors, {total}" in shown.getvalue()
    # The adapter names the hub id as its base, not the cache folder it was loaded from.
    adapter = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == REPO

    # Evaluating the run on another computer (an empty cache): its base downloads first.
    from studio.core.evaluate import EvalOptions, evaluate_events
    from studio.core.train import CancelToken

    shutil.rmtree(tmp_path / "hf-cache")
    opts = EvalOptions(runs=[str(tmp_path / "run")], samples=0, device="cpu")
    # Cancelled during the download: stopped as at any stage, no report.
    served.slow = ("model.safetensors", 16 * 1024, 0.05)
    cancel, events = CancelToken(), []
    for event in evaluate_events(opts, cancel):
        events.append(event)
        if event.type == "progress" and event.stage.endswith("model.safetensors"):
            cancel.cancel()
    assert events[-1].type == "done" and events[-1].status == "stopped"
    assert not (tmp_path / "run" / "eval").exists() or not any(
        (tmp_path / "run" / "eval").iterdir()
    )
    served.slow = None
    events = list(evaluate_events(opts))
    assert events[-1].type == "done" and events[-1].status == "completed", events[-1]
    stages = [e.stage for e in events if e.type == "progress"]
    assert "download tiny/llama: model.safetensors" in stages
    assert stages.index("download tiny/llama: model.safetensors") < stages.index("loading")


def test_stopping_a_run_during_its_download_leaves_no_run_folder(served, tmp_path):
    from studio.core.train import CancelToken, run_training
    from tests.test_train import config, write_data

    served.slow = ("model.safetensors", 16 * 1024, 0.05)
    cancel = CancelToken()

    def stop_when_downloading(event):
        if event.type == "progress" and event.done:
            cancel.cancel()

    cfg = config(REPO, write_data(tmp_path / "data.jsonl", 8), tmp_path / "run", max_steps=2)
    with pytest.raises(hub.DownloadCancelled):
        run_training(cfg, cancel=cancel, on_event=stop_when_downloading)
    assert not (tmp_path / "run").exists()


def test_studio_chat_on_a_hub_id_prints_the_download_progress(served, capsys):
    from studio.cli import main

    code = main(["chat", "--model", REPO, "--prompt", "Hello", "--max-new-tokens", "3",
                 "--device", "cpu", "--seed", "0"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0
    assert "Downloading tiny/llama" in err and "(100%)" in err
    assert served.gets("model.safetensors") == 1


def test_studio_chat_offline_says_one_sentence(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    from studio.cli import main

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert main(["chat", "--model", "some/model", "--prompt", "Hello"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: model.path: could not fetch some/model: the Hugging Face")
