"""The Python side of attnx's plugins: headers, building, finding and loading the TensorRT plugin
library, and Polygraphy-style loaders of engines built with it. Parity runs are attnx/check's."""
