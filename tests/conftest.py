import pytest
import torch

from attnx.exporters import export
from attnx.models import load_model


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """Export a zoo model once per (name, dtype, opset) for the whole session: (LoadedModel, path)."""
    cache = {}

    def get(name, dtype="fp32", opset=18):
        key = (name, dtype, opset)
        if key not in cache:
            loaded = load_model(name)
            path = tmp_path_factory.mktemp("onnx") / f"{name}-{dtype}-{opset}.onnx"
            export(loaded, path, dtype=dtype, opset=opset)
            cache[key] = (loaded, path)
        return cache[key]

    return get


@pytest.fixture
def rng():
    """A freshly seeded generator per test; the seed is printed, so a failure shows it."""
    seed = torch.seed() % 2**31
    print(f"random seed: {seed}")
    return torch.Generator().manual_seed(seed)
