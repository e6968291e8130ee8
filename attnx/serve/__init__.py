"""Serving attnx files on NVIDIA Triton Inference Server (docs/serving.md).

`repository` writes a Triton model repository (configs built as Triton's ModelConfig protobuf in
`config`, the Python backend's model in `triton_model`), `server` starts and stops `tritonserver`,
`client` streams tokens through a running server with tritonclient.
"""

# declared here, without imports, so that the CLI's help reads them cheaply
BACKENDS = ("python", "onnxruntime", "tensorrt")
MODES = ("full", "stream")
DEFAULT_MAX_BATCH = 8
DEFAULT_MAX_SEQUENCES = 64
DEFAULT_IDLE_TIMEOUT_S = 60.0
DEFAULT_HTTP_PORT, DEFAULT_GRPC_PORT = 8000, 8001
DEFAULT_READY_TIMEOUT_S = 120.0
