"""Option groups shared by several commands: each option, and its default, is declared once here.

The defaults of a parity run are attnx.check's; importing them loads attnx.check.data only, not
the runners.
"""

from __future__ import annotations

import argparse
import re

MODEL_HELP = "a zoo name (see `attnx zoo`) or path/file.py:factory returning (module, example_inputs)"
# the example an export traces; both >= 2, since torch.export specialises sizes of 1
TRACE_LEN, TRACE_BATCH = 32, 2
SEED_LIMIT = 2**63  # torch.Generator.manual_seed takes seeds below this


def at_least(low: int):
    """An argparse type: an integer >= `low`; anything else is a usage error (exit 2) saying so."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, found {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, found {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


class ListOption(argparse.Action):
    """A list flag in attnx's one style: repeatable, and each value may hold several, comma-separated
    (`--seq-len 1,37 --seq-len 300` is [1, 37, 300]; a comma inside brackets belongs to its item, as in
    `--input-shapes ids:[2,37],mask:[2,37]`). Each item goes through the option's `type`
    (a usage error names the item); `choices`, when given, are checked per item."""

    def __init__(self, option_strings, dest, type=None, choices=None, **kwargs):
        self.item_type, self.item_choices = type or str, choices
        metavar = kwargs.pop("metavar", None) or (f"{{{','.join(map(str, choices))}}}" if choices else None)
        super().__init__(option_strings, dest, metavar=metavar, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        items = [item.strip() for item in re.split(r",(?![^\[]*\])", str(values))]  # a comma inside [...] is the item's
        if not all(items):
            parser.error(f"argument {option_string}: expected a comma-separated list with no empty item, "
                         f"found {values!r}")
        parsed = []
        for item in items:
            try:
                value = self.item_type(item)
            except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
                parser.error(f"argument {option_string}: {exc}")
            if self.item_choices is not None and value not in self.item_choices:
                parser.error(f"argument {option_string}: expected one of {', '.join(map(str, self.item_choices))}, "
                             f"found {item!r}")
            parsed.append(value)
        # a fresh list: argparse's default is shared, and must not grow with each parse
        setattr(namespace, self.dest, list(getattr(namespace, self.dest, None) or []) + parsed)


def seed_value(text: str) -> int:
    """An argparse type: a seed in [0, 2**63)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed in [0, 2**63), found {text!r}") from None
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"expected an integer seed in [0, 2**63), found {value}")
    return value


def add_trace_options(p: argparse.ArgumentParser) -> None:
    """--seq-len (dest trace_len) and --batch of the traced example; None where not given (a factory then
    traces its own example; a factory given one must take it: attnx.models.load_model)."""
    p.add_argument("--seq-len", dest="trace_len", type=at_least(2), default=None,
                   help=f"sequence length traced (>= 2; the exported sequence axis is dynamic; default {TRACE_LEN}; "
                        "a path/file.py:factory is called with seq_len=N, and without the flag draws its own)")
    p.add_argument("--batch", type=at_least(2), default=None,
                   help=f"batch traced (>= 2; the exported batch axis is dynamic; default {TRACE_BATCH}; "
                        "a path/file.py:factory is called with batch=B, and without the flag draws its own)")


def add_export_options(p: argparse.ArgumentParser) -> None:
    """--dtype and --opset of an export."""
    from attnx.exporters.formats import DEFAULT_OPSET, DTYPE_NAMES, OPSETS

    p.add_argument("--dtype", choices=list(DTYPE_NAMES), default="fp32", help="exported float dtype (default fp32)")
    p.add_argument("--opset", type=int, choices=list(OPSETS), default=None,
                   help=f"ONNX opset (default: {DEFAULT_OPSET}, or 23 for a model with softmax attention, "
                        "which then exports as ONNX Attention)")


def _lens(lengths) -> str:
    return ", ".join(map(str, lengths))


def add_seq_lens(p: argparse.ArgumentParser, *, stream: bool = False) -> None:
    """--seq-len, repeatable: the lengths a parity run checks (`stream`: also the prompt lengths)."""
    from attnx.check import DEFAULT_PROMPT_LENS, DEFAULT_SEQ_LENS

    if stream:
        text = (f"lengths to check (stream: prompt lengths); repeat or comma-separate (default {_lens(DEFAULT_SEQ_LENS)}; "
                f"stream {_lens(DEFAULT_PROMPT_LENS)})")
    else:
        text = f"lengths to check; repeat or comma-separate (default {_lens(DEFAULT_SEQ_LENS)})"
    p.add_argument("--seq-len", type=at_least(1), action=ListOption, metavar="N", help=text)


def seq_lens(args: argparse.Namespace) -> list[int]:
    """The lengths --seq-len gave, else attnx.check's defaults."""
    from attnx.check import DEFAULT_SEQ_LENS

    return list(args.seq_len or DEFAULT_SEQ_LENS)


def prompt_lens(args: argparse.Namespace) -> list[int]:
    """The prompt lengths --seq-len gave, else attnx.check's streaming defaults."""
    from attnx.check import DEFAULT_PROMPT_LENS

    return list(args.seq_len or DEFAULT_PROMPT_LENS)


def add_seed(p: argparse.ArgumentParser, *, default: int, of: str) -> None:
    """--seed of the random `of`: fixed by default, so that a rerun repeats a run (printed in the report)."""
    p.add_argument("--seed", type=seed_value, default=default, help=f"seed of {of} (default {default})")


def add_check_options(p: argparse.ArgumentParser) -> None:
    """--batch and --seed of a parity run's random inputs, and --json for its report."""
    from attnx.check import DEFAULT_BATCH, DEFAULT_SEED

    p.add_argument("--batch", type=at_least(1), default=DEFAULT_BATCH,
                   help=f"batch size of the random inputs (default {DEFAULT_BATCH})")
    add_seed(p, default=DEFAULT_SEED, of="the random inputs")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the report as JSON")


def add_plugin_library(p: argparse.ArgumentParser, *, flag: str = "--plugins", use: str = "") -> None:
    """The plugin library option (`--plugins LIB`, or `flag`), dest `plugins`; `use` says what for."""
    from attnx.plugins.library import ENV_VAR, default_library_text

    p.add_argument(flag, metavar="LIB", dest="plugins", default=None,
                   help=f"plugin library{' ' + use if use else ''} (default: ${ENV_VAR}, else "
                        f"{default_library_text()})")


PROVIDERS = ("tensorrt", "cuda", "cpu")  # Polygraphy's names of ONNX Runtime's execution providers


def add_providers(p: argparse.ArgumentParser) -> None:
    """--providers: ONNX Runtime execution providers in priority order (attnx.check.providers)."""
    p.add_argument("--providers", action=ListOption, choices=PROVIDERS, default=None,
                   help="ONNX Runtime execution providers for --backend ort, in priority order; repeat or "
                        "comma-separate (default cpu)")
