"""Training the zoo's language models on synthetic tasks: `attnx train MODEL --task TASK -o CKPT`.

The tasks are declared here by name and description without torch (attnx.cli.train lists them
in its help); `tasks.py` generates them, `loop.py` trains and evaluates, `checkpoint.py` writes
the safetensors file with what made it. `python -m attnx.train.zoo` retrains every checkpoint the
zoo ships (attnx/models/trained/) with the command each records.
"""

TASKS: dict[str, str] = {  # name → description
    "recall": "associative recall: key-value pair tokens, then a queried key; the answer is its value "
              "(exactly one pair holds the key, anywhere in the context)",
    "copy": "selective copy: one data token among noise tokens, then a marker; the answer is the data token",
}
