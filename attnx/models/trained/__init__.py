"""The zoo's trained checkpoints: `<variant>-trained` is the architecture of a `-tiny` entry with
the weights `attnx train` left here, in safetensors.

Each checkpoint records, in its safetensors metadata (key `attnx.train`, JSON), the zoo model
whose architecture it fills, the task, seed, steps, the exact command that made it and the metrics
at the training length; `manifest.json` beside them lists the same per file. `<name>.safetensors`
is training seed 0 (what the zoo entry loads), `<name>.seed<K>.safetensors` seed K (read by the
benchmark).
"""

from __future__ import annotations

import json
from pathlib import Path

from attnx.errors import BackendUnavailableError, ModelFactoryError

FOLDER = Path(__file__).resolve().parent
METADATA_KEY = "attnx.train"


def checkpoint_path(name: str, seed: int = 0) -> Path:
    """The shipped file of trained model `name` for training seed `seed`."""
    return FOLDER / (f"{name}.safetensors" if seed == 0 else f"{name}.seed{seed}.safetensors")


def shipped_seeds(name: str) -> list[int]:
    """The training seeds shipped for `name`, ascending."""
    seeds = [0] if checkpoint_path(name).is_file() else []
    for path in FOLDER.glob(f"{name}.seed*.safetensors"):
        suffix = path.name[len(name) + len(".seed"):-len(".safetensors")]
        if suffix.isdigit():
            seeds.append(int(suffix))
    return sorted(seeds)


def read_checkpoint(path: str | Path):
    """(state dict of tensors, the recorded metadata as a dict) of a checkpoint `attnx train` wrote."""
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file, safe_open
    except ImportError as exc:
        raise BackendUnavailableError(f"{path}: reading a trained checkpoint needs the safetensors package, found "
                                      f"that importing it fails ({exc}): pip install safetensors") from exc

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        state = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise ModelFactoryError(f"{path}: expected a safetensors checkpoint, found that reading it fails: {exc}") from exc
    if METADATA_KEY not in metadata:
        raise ModelFactoryError(f"{path}: expected metadata key {METADATA_KEY!r} (written by attnx train), found "
                                f"keys {sorted(metadata) or 'none'}")
    return state, json.loads(metadata[METADATA_KEY])


def load_into(module, path: str | Path, model: str):
    """`module` (the architecture of zoo model `model`) with the weights of checkpoint `path`."""
    state, metadata = read_checkpoint(path)
    if metadata.get("model") != model:
        raise ModelFactoryError(f"{path}: expected a checkpoint of {model}, found one of {metadata.get('model')!r}")
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelFactoryError(f"{path}: expected the tensors of {model}, found {len(missing)} missing "
                                f"({', '.join(missing[:3])}) and {len(unexpected)} unexpected ({', '.join(unexpected[:3])})")
    return module


def build(name: str, base: str):
    """Zoo builder: trained model `name` = zoo model `base` with the weights of its seed-0 checkpoint."""
    from attnx.models.zoo import ZOO

    path = checkpoint_path(name)
    if not path.is_file():
        raise ModelFactoryError(f"{name}: expected its checkpoint at {path}, found none (retrain it with "
                                "`python -m attnx.train.zoo`)")
    return load_into(ZOO[base].build(), path, base)
