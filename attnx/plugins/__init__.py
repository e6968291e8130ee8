"""The Python side of attnx's plugins: headers, building and loading the TensorRT plugin library."""
