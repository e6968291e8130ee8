"""Standard ONNX `Attention` and `RotaryEmbedding` nodes: does ONNX Runtime run them, and does a file
holding them run at sizes other than the export's.

torch's dynamo exporter writes SDPA (nn.MultiheadAttention, TransformerEncoderLayer, any
`scaled_dot_product_attention`) as ONNX `Attention` at opset 23. Such a file can carry a size the
exporter baked in (a Reshape to a constant shape, a static batch), so that it fails at a batch or a
length it was not traced at, whatever attnx does to it. `check_standard_nodes` runs the input and
the written file in ONNX Runtime (CPU) at batch 1 and 2 and at two lengths, where those axes are
dynamic, and tells the input's own failures from ones the rewrite would have brought.

`ort_opset_support(23)` says whether the installed ONNX Runtime runs opset 23's `Attention` and
`RotaryEmbedding` (once per process: a two-node model in a session).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import onnx

STANDARD_OPS = ("Attention", "RotaryEmbedding")
STANDARD_OPSET = 23  # Attention and RotaryEmbedding enter the default domain at opset 23
# float32 fusion reorders sums of at most a few thousand terms (~1e-6 relative); a wrong rewrite
# moves outputs by 1e-2 or more
RTOL = 1e-4
PROBE_LEN, OTHER_LEN = 16, 37  # lengths checked when the export's is not recorded; 37 is no power of 2
_MAX_PROTO_BYTES = 2**31 - 1  # a ModelProto larger than this cannot be serialized for a session
EXPORT_LEN_KEY = "attnx.export_seq_len"


def standard_nodes(model: onnx.ModelProto) -> dict[str, int]:
    """op type → count of default-domain Attention / RotaryEmbedding nodes, in the graph and its
    local functions (sub-graphs of If/Loop included)."""
    counts: dict[str, int] = {}

    def walk(nodes):
        for n in nodes:
            if n.domain in ("", "ai.onnx") and n.op_type in STANDARD_OPS:
                counts[n.op_type] = counts.get(n.op_type, 0) + 1
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g.node)
                for g in a.graphs:
                    walk(g.node)

    walk(model.graph.node)
    for f in model.functions:
        walk(f.node)
    return counts


@functools.lru_cache(maxsize=None)
def ort_opset_support(opset: int = STANDARD_OPSET) -> tuple[bool, str]:
    """(whether the installed ONNX Runtime runs a model at `opset` holding Attention and RotaryEmbedding
    (from 23) on the CPU, a sentence saying so with its version). Cached per process."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    version = f"onnxruntime {ort.__version__}"
    info = helper.make_tensor_value_info
    nodes = [helper.make_node("Identity", ["q"], ["y"])]
    inputs = [info("q", TensorProto.FLOAT, [1, 1, 2, 4])]
    if opset >= STANDARD_OPSET:
        nodes = [helper.make_node("RotaryEmbedding", ["q", "cos", "sin"], ["qr"]),
                 helper.make_node("Attention", ["qr", "q", "q"], ["y"])]
        inputs += [info("cos", TensorProto.FLOAT, [1, 2, 2]), info("sin", TensorProto.FLOAT, [1, 2, 2])]
    graph = helper.make_graph(nodes, "opset_probe", inputs, [info("y", TensorProto.FLOAT, [1, 1, 2, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    feeds = {"q": np.ones((1, 1, 2, 4), np.float32), "cos": np.ones((1, 2, 2), np.float32),
             "sin": np.zeros((1, 2, 2), np.float32)}
    try:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        session.run(None, {k: v for k, v in feeds.items() if k in {i.name for i in session.get_inputs()}})
    except Exception as exc:  # ORT's own error types; the message is what matters
        return False, f"{version} does not run opset {opset}" + (
            " Attention/RotaryEmbedding" if opset >= STANDARD_OPSET else "") + f" ({_first_line(exc)})"
    ops = " with Attention and RotaryEmbedding" if opset >= STANDARD_OPSET else ""
    return True, f"{version} runs opset {opset}{ops}"


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:limit] + (" …" if len(text) > limit else "")


@dataclasses.dataclass
class Case:
    """One run of the input and the written file at a batch and a length."""

    batch: int
    seq_len: int | None  # None: the model has no dynamic non-batch axis
    input_error: str | None = None
    output_error: str | None = None
    rel_diff: float | None = None  # largest |written − input| over the outputs' largest value, where both ran

    @property
    def where(self) -> str:
        return f"batch {self.batch}" + (f", length {self.seq_len}" if self.seq_len is not None else "")

    @property
    def regression(self) -> str | None:
        """What the written file does worse than the input here, else None."""
        if self.input_error is None and self.output_error is not None:
            return f"the written file fails where the input runs: {self.output_error}"
        if self.rel_diff is not None and self.rel_diff > RTOL:
            return f"the written file's outputs differ from the input's by {self.rel_diff:.2e} relative (> {RTOL:g})"
        return None


@dataclasses.dataclass
class StandardNodesCheck:
    """The result of `check_standard_nodes`: the input's standard nodes, each case run, and notes."""

    nodes: dict[str, int]
    cases: list[Case]
    notes: list[str]

    @property
    def input_fails(self) -> list[Case]:
        return [c for c in self.cases if c.input_error is not None]

    @property
    def regressions(self) -> list[Case]:
        return [c for c in self.cases if c.regression is not None]

    @property
    def status(self) -> str:
        """ok, input-fails (the written file behaves as the input does) or regression (it does worse)."""
        return "regression" if self.regressions else "input-fails" if self.input_fails else "ok"

    def lines(self) -> list[str]:
        """The check in words, one line each: what ran, then each failure."""
        nodes = ", ".join(f"{n} {op}" for op, n in sorted(self.nodes.items()))
        ran = "; ".join(c.where for c in self.cases) or "no case"
        out = [f"standard nodes in the input ({nodes}): checked in ONNX Runtime (CPU) at {ran}"]
        out += [f"  {note}" for note in self.notes]
        for c in self.cases:
            if c.input_error is not None:
                also = ("the written file fails there too" if c.output_error is not None
                        else "the written file runs there")
                out.append(f"  the INPUT itself fails at {c.where} ({also}): {c.input_error}")
            if c.regression is not None:
                out.append(f"  at {c.where}: {c.regression}")
        if self.status == "ok":
            out.append(f"  input and written file run at every case, outputs within {RTOL:g} relative")
        return out

    def to_json(self) -> dict:
        return {"nodes": self.nodes, "status": self.status, "rtol": RTOL, "notes": self.notes,
                "cases": [{**dataclasses.asdict(c), "regression": c.regression,  # inf (a NaN on one side): null
                           "rel_diff": c.rel_diff if c.rel_diff is None or np.isfinite(c.rel_diff) else None}
                          for c in self.cases]}


def _dims(model: onnx.ModelProto):
    """[(input name, numpy dtype, [(axis, fixed size or None, dim name)])] of the graph's real inputs."""
    from onnx import helper

    inits = {i.name for i in model.graph.initializer}
    out = []
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        t = inp.type.tensor_type
        dtype = helper.tensor_dtype_to_np_dtype(t.elem_type) if t.elem_type else np.float32
        dims = [(axis, d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None, d.dim_param)
                for axis, d in enumerate(t.shape.dim)]
        out.append((inp.name, dtype, dims))
    return out


def _feeds(inputs, batch: int, seq_len: int | None, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random feeds: axis 0 dynamic → `batch`, any other dynamic axis → `seq_len` (one size per dim name,
    the first axis it names deciding which); floats normal, integers in [0, 2) (valid ids and masks),
    booleans True."""
    by_name: dict[str, int] = {}
    feeds = {}
    for name, dtype, dims in inputs:
        shape = []
        for axis, fixed, dim_name in dims:
            if fixed is not None:
                shape.append(fixed)
                continue
            size = batch if axis == 0 else (seq_len or 1)
            shape.append(by_name.setdefault(dim_name, size) if dim_name else size)
        if np.issubdtype(dtype, np.floating):
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[name] = np.ones(shape, np.bool_)
        else:
            feeds[name] = rng.integers(0, 2, shape).astype(dtype)
    return feeds


def _session(model: onnx.ModelProto):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # ORT's warnings about unused initializers are not the user's concern
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _run(session, feeds):
    """(outputs, None) or (None, the error in one line)."""
    if isinstance(session, str):
        return None, session
    try:
        return session.run(None, feeds), None
    except Exception as exc:
        return None, _first_line(exc)


def check_standard_nodes(original: onnx.ModelProto, written: onnx.ModelProto, *, export_len: int | None = None,
                         seed: int = 0) -> StandardNodesCheck | None:
    """None when `original` holds no default-domain Attention/RotaryEmbedding; else both files run in ONNX
    Runtime (CPU) on the same random inputs at batch 1 and 2 (2 only where axis 0 is dynamic) at the
    export's length (`export_len`, else the file's `attnx.export_seq_len` metadata, else PROBE_LEN), and at
    batch 1 at another length (where a non-batch axis is dynamic). `written` must be a form ONNX Runtime
    runs (ort or portable)."""
    nodes = standard_nodes(original)
    if not nodes:
        return None
    notes: list[str] = []
    if export_len is None:
        meta = {p.key: p.value for p in original.metadata_props}
        export_len = int(meta[EXPORT_LEN_KEY]) if meta.get(EXPORT_LEN_KEY, "").isdigit() and \
            int(meta[EXPORT_LEN_KEY]) > 0 else None
    inputs = _dims(original)
    batch_dynamic = any(dims and dims[0][1] is None for _, _, dims in inputs)
    seq_dynamic = any(fixed is None for _, _, dims in inputs for axis, fixed, _ in dims if axis > 0)
    first = export_len or PROBE_LEN
    if export_len is None and seq_dynamic:
        notes.append(f"the export's length is not recorded in the file: checked at {PROBE_LEN} and {OTHER_LEN}")
    other = OTHER_LEN if first != OTHER_LEN else OTHER_LEN + 4
    sizes = [(1, first if seq_dynamic else None)]
    if batch_dynamic:
        sizes.append((2, sizes[0][1]))
    else:
        notes.append("batch not checked at 2: every input's axis 0 is static")
    if seq_dynamic:
        sizes.append((1, other))
    else:
        notes.append("length not varied: no input has a dynamic axis past the batch")
    for label, model in (("input", original), ("written file", written)):
        if model.ByteSize() > _MAX_PROTO_BYTES:
            notes.append(f"not run: the {label} is over 2 GiB in memory")
            return StandardNodesCheck(nodes, [], notes)
    sessions = []
    for model in (original, written):
        try:
            sessions.append(_session(model))
        except Exception as exc:
            sessions.append(f"ONNX Runtime does not load it: {_first_line(exc)}")
    rng = np.random.default_rng(seed)
    cases = []
    for batch, seq_len in sizes:
        feeds = _feeds(inputs, batch, seq_len, rng)
        case = Case(batch, seq_len)
        want, case.input_error = _run(sessions[0], feeds)
        got, case.output_error = _run(sessions[1], feeds)
        if want is not None and got is not None:
            diffs = []
            for w, g in zip(want, got):
                w64, g64 = np.asarray(w, np.float64), np.asarray(g, np.float64)
                if w64.shape != g64.shape:
                    diffs.append(float("inf"))
                    continue
                wnan, gnan = ~np.isfinite(w64), ~np.isfinite(g64)
                if not np.array_equal(wnan, gnan):  # a NaN or inf on one side only
                    diffs.append(float("inf"))
                    continue
                w64, g64 = w64[~wnan], g64[~gnan]
                scale = max(float(np.abs(w64).max()) if w64.size else 0.0, 1e-6)
                diffs.append(float(np.abs(g64 - w64).max()) / scale if w64.size else 0.0)
            case.rel_diff = max(diffs, default=0.0)
        cases.append(case)
    return StandardNodesCheck(nodes, cases, notes)
