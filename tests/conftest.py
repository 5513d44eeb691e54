import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny random Llama with a ChatML template and a byte-level BPE tokenizer (HF layout)."""
    from studio.core.tiny import build_model

    return build_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_model_no_template(tmp_path_factory):
    """The same tiny model but with no chat template in its tokenizer."""
    from studio.core.tiny import build_model

    return build_model(tmp_path_factory.mktemp("tiny_nt") / "model", chat_template=None)
