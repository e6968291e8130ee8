"""Retrain the zoo's shipped checkpoints: `python -m attnx.train.zoo [NAME ...] [--seeds 0,1,2]`.

Each trained entry (attnx.models.zoo.TRAINED) is trained by `attnx train` on associative recall at
N = 64, one run after another, into attnx/models/trained/; then manifest.json there is rewritten
from the checkpoints' own metadata (the command, the metrics, a sha256 per file).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys

from attnx.files import write_text
from attnx.models.trained import FOLDER, checkpoint_path, read_checkpoint, shipped_seeds
from attnx.models.zoo import TRAINED

TASK, SEQ_LEN = "recall", 64


def retrain(name: str, seed: int) -> None:
    """Run `attnx train` for trained entry `name` and training seed `seed`, one thread."""
    path = checkpoint_path(name, seed).relative_to(FOLDER.parents[2])
    cmd = [sys.executable, "-m", "attnx.cli", "train", TRAINED[name], "--task", TASK, "--seq-len", str(SEQ_LEN),
           "--seed", str(seed), "--threads", "1", "-o", str(path)]
    subprocess.run(cmd, check=True, cwd=FOLDER.parents[2], env=dict(os.environ, OMP_NUM_THREADS="1"))


def write_manifest() -> None:
    """manifest.json: per shipped file, its sha256 and what its metadata records."""
    entries = {}
    for name in TRAINED:
        for seed in shipped_seeds(name):
            path = checkpoint_path(name, seed)
            _, record = read_checkpoint(path)
            entries[path.name] = {"zoo_name": name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                                  **{k: record[k] for k in ("model", "task", "seq_len", "steps", "seed", "command",
                                                            "metrics", "torch")}}
    write_text(FOLDER / "manifest.json", json.dumps(entries, indent=2, sort_keys=True) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m attnx.train.zoo", description=__doc__)
    p.add_argument("names", nargs="*", default=list(TRAINED), help="trained entries (default: all)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default 0,1,2)")
    p.add_argument("--manifest-only", action="store_true", help="only rewrite manifest.json")
    args = p.parse_args(argv)
    if not args.manifest_only:
        for seed in (int(s) for s in args.seeds.split(",")):
            for name in args.names:
                retrain(name, seed)
                write_manifest()
    write_manifest()
    return 0


if __name__ == "__main__":
    sys.exit(main())
