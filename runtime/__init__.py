"""What serving needs without torch: artifact metadata, image decoding, the ONNX session, top-k."""
