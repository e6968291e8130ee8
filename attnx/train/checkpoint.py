"""Writing a checkpoint: the weights in safetensors, with what made them in the metadata."""

from __future__ import annotations

import json

import torch
from torch import nn

from attnx.errors import BackendUnavailableError
from attnx.files import atomic_output
from attnx.models.fingerprint import architecture_sha256, weights_sha256
from attnx.models.trained import METADATA_KEY


def save(path, module: nn.Module, record: dict) -> dict:
    """Write `module`'s weights to `path` atomically, with `record` (model, task, seed, steps, command,
    metrics, ...) and the model's fingerprint as metadata; returns the metadata written."""
    try:
        from safetensors.torch import save_file
    except ImportError as exc:
        raise BackendUnavailableError(f"writing {path} needs the safetensors package, found that importing it "
                                      f"fails ({exc}): pip install safetensors") from exc

    record = dict(record, torch=torch.__version__, architecture_sha256=architecture_sha256(module),
                  weights_sha256=weights_sha256(module))
    state = {name: t.detach().contiguous() for name, t in module.state_dict().items()}
    with atomic_output(path) as staged:
        save_file(state, str(staged), metadata={METADATA_KEY: json.dumps(record, sort_keys=True)})
    return record
