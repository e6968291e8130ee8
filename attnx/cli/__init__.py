"""The `attnx` command: `main` dispatches to one module per command; `options` holds the option
groups several commands share."""
