"""The model side: the ONNX Runtime session behind the batcher, in this process or in the model server."""
