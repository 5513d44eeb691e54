"""Merge a plain LoRA adapter into the base weights tensor by tensor, straight from the files.

Loading the whole base into transformers and merging with peft needs one full copy of the
model in memory (plus the import of peft and the model's code). For the common case, a
plain LoRA (no DoRA, no modules_to_save, no per-layer rank or alpha patterns) on a base
stored as safetensors, each weight is read from its file with one positioned read, gets
`scale * B @ A` added in float32, and is handed to the writer: memory stays near one tensor.
Anything else takes the peft path (merge.load_merged), which handles every adapter peft can.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

from studio.core.export.errors import Cancelled
from studio.core.model_info import safetensors_header, weight_files

_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
_LORA_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<ab>[AB])\.weight$")


class LazyTensor:
    """A base weight not read yet: its shape, and load() for the merged tensor."""

    def __init__(self, source: MergedWeights, name: str, shape: tuple[int, ...]):
        self.source, self.name = source, name
        self.shape = shape

    def load(self):
        return self.source.load(self.name)


class MergedWeights(Mapping):
    """name -> LazyTensor for every tensor of the base, merged with the adapter on load()."""

    def __init__(self, base_dir: Path, entries: dict, deltas: dict, out_dtype: str):
        self.base_dir, self.entries, self.deltas = Path(base_dir), entries, deltas
        self.out_dtype = out_dtype
        self._header_lens: dict[Path, int] = {}

    def __getitem__(self, name: str) -> LazyTensor:
        file, meta = self.entries[name]
        return LazyTensor(self, name, tuple(meta["shape"]))

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def read(self, name: str):
        """The stored tensor, read with one positioned read (no memory map in our RSS)."""
        import torch

        file, meta = self.entries[name]
        start, end = meta["data_offsets"]
        dtype = getattr(torch, _DTYPES[meta["dtype"]])
        if end == start:
            return torch.empty(meta["shape"], dtype=dtype)
        header_len = self._header_len(file)
        with open(file, "rb") as fh:
            data = bytearray(end - start)
            fh.seek(8 + header_len + start)
            got = fh.readinto(data)
        if got != len(data):
            from studio.core.errors import ModelError

            raise ModelError(
                f"model.path: {file} is cut short ({name} needs {len(data)} bytes, "
                f"{got} are there); download the model again"
            )
        return torch.frombuffer(data, dtype=dtype).reshape(meta["shape"])

    def load(self, name: str):
        import torch

        weight = self.read(name)
        delta = self.deltas.get(name)
        if delta is not None:
            a, b, scale = delta
            weight = weight.float().addmm_(b.float(), a.float(), alpha=scale)
        return weight.to(getattr(torch, self.out_dtype))

    def _header_len(self, file: Path) -> int:
        if file not in self._header_lens:
            with open(file, "rb") as fh:
                self._header_lens[file] = int.from_bytes(fh.read(8), "little")
        return self._header_lens[file]


def _base_entries(base_dir: Path) -> dict | None:
    files = weight_files(Path(base_dir))
    if not files:
        return None
    entries = {}
    for f in files:
        for name, meta in safetensors_header(f).items():
            if name == "__metadata__":
                continue
            if meta.get("dtype") not in _DTYPES:
                return None  # quantized or exotic storage: the peft path knows more
            entries[name] = (f, meta)
    return entries


def streamable(adapter_dir: Path, base_dir: Path, out_dtype: str) -> MergedWeights | None:
    """The base merged lazily with this adapter, or None when only peft can merge it."""
    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    weights = adapter_dir / "adapter_model.safetensors"
    try:
        config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(config, dict):
        return None  # peft's path (through the adapter check) says what is wrong with it
    r, alpha = config.get("r", 8), config.get("lora_alpha", 8)
    if type(r) is not int or r < 1 or type(alpha) not in (int, float) or alpha != alpha:
        return None
    plain = (
        config.get("peft_type", "LORA") == "LORA"
        and not config.get("use_dora")
        and not config.get("modules_to_save")
        and not config.get("fan_in_fan_out")
        and not config.get("rank_pattern")
        and not config.get("alpha_pattern")
        and not config.get("lora_bias")
        and weights.is_file()
    )
    entries = _base_entries(base_dir) if plain else None
    if entries is None:
        return None
    alpha = float(alpha)
    scale = alpha / (r**0.5) if config.get("use_rslora") else alpha / r
    tensors = load_file(str(weights))
    pairs: dict[str, dict] = {}
    for key, value in tensors.items():
        m = _LORA_KEY.match(key)
        if m is None:
            return None  # something besides lora_A/lora_B: let peft handle it
        pairs.setdefault(m["module"], {})[m["ab"]] = value
    deltas = {}
    for module, ab in pairs.items():
        name = f"{module}.weight"
        if set(ab) != {"A", "B"} or name not in entries:
            return None  # a renamed layout (transformers converts some on load): peft's path
        shape = entries[name][1]["shape"]
        rank_ok = (
            ab["A"].dim() == 2 and ab["B"].dim() == 2 and ab["A"].shape[0] == r == ab["B"].shape[1]
        )
        if not rank_ok or len(shape) != 2 or shape != [ab["B"].shape[0], ab["A"].shape[1]]:
            return None  # peft's path then reports the misfit in its own words
        deltas[name] = (ab["A"], ab["B"], scale)
    return MergedWeights(base_dir, entries, deltas, out_dtype)


_SAFE_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}


def _write_shard(path: Path, names: list[str], weights: MergedWeights, sizes: dict, tick) -> None:
    """One .safetensors file written tensor by tensor: the header (every offset is known up
    front from the shapes), then each merged tensor's bytes, so only one is ever in memory."""
    import struct

    import torch

    header, offset = {}, 0
    for n in names:
        shape = weights.entries[n][1]["shape"]
        dtype = _SAFE_DTYPES[weights.out_dtype]
        header[n] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + sizes[n]]}
        offset += sizes[n]
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the format aligns the data to 8 bytes
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for n in names:
            tick()
            tensor = weights.load(n).contiguous()
            data = tensor.view(-1).view(dtype=torch.uint8).numpy()
            if len(data) != sizes[n]:
                raise AssertionError(f"{n}: {len(data)} bytes, expected {sizes[n]}")
            fh.write(memoryview(data))
            del tensor, data


def write_safetensors(
    weights: MergedWeights,
    folder: Path,
    *,
    shard_bytes: int = 2 * 1024**3,
    progress=None,
    cancel=None,
) -> None:
    """Shards of at most shard_bytes, with the index transformers reads for several."""
    names = list(weights)
    width = 4 if weights.out_dtype == "float32" else 2
    sizes = {}
    for n in names:
        count = 1
        for d in weights.entries[n][1]["shape"]:
            count *= d
        sizes[n] = count * width
    shards: list[list[str]] = [[]]
    used = 0
    for n in names:
        if shards[-1] and used + sizes[n] > shard_bytes:
            shards.append([])
            used = 0
        shards[-1].append(n)
        used += sizes[n]
    done = 0

    def tick() -> None:
        nonlocal done
        if cancel is not None and cancel():
            raise Cancelled()
        done += 1
        if progress is not None:
            progress(done, len(names))

    count = len(shards)
    index = {}
    for i, shard in enumerate(shards, 1):
        file = "model.safetensors" if count == 1 else f"model-{i:05d}-of-{count:05d}.safetensors"
        _write_shard(folder / file, shard, weights, sizes, tick)
        index.update(dict.fromkeys(shard, file))
    if count > 1:
        (folder / "model.safetensors.index.json").write_text(
            json.dumps(
                {"metadata": {"total_size": sum(sizes.values())}, "weight_map": index}, indent=2
            ),
            encoding="utf-8",
        )


_NOT_COPIED = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".onnx", ".h5", ".msgpack")


def copy_config(base_dir: Path, folder: Path, out_dtype: str, eos_ids: list[int]) -> None:
    """config.json with the written dtype; generation_config.json stopping at end of turn; and
    the base's other small files (its own code for auto_map, processor configs...) as they are.
    The tokenizer is saved by the caller, with the trained chat template."""
    import shutil

    base_dir = Path(base_dir)
    for f in base_dir.iterdir():
        name = f.name
        if (
            f.is_file()
            and not name.endswith(_NOT_COPIED)
            and not name.startswith(("tokenizer", "special_tokens_map", "chat_template", "."))
            and name
            not in ("config.json", "generation_config.json", "model.safetensors.index.json")
        ):
            shutil.copy2(f, folder / name)
    config = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
    for section in (config, config.get("text_config")):
        if isinstance(section, dict):
            # Both names: transformers 5 reads `dtype`, older versions `torch_dtype`.
            section["dtype"] = section["torch_dtype"] = out_dtype
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    gen_path = base_dir / "generation_config.json"
    gen = json.loads(gen_path.read_text(encoding="utf-8")) if gen_path.is_file() else {}
    if eos_ids:
        gen["eos_token_id"] = eos_ids if len(eos_ids) > 1 else eos_ids[0]
    if gen:
        (folder / "generation_config.json").write_text(
            json.dumps(gen, indent=2) + "\n", encoding="utf-8"
        )
