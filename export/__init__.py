"""PyTorch -> ONNX: convert with fused attention, verify against PyTorch, then write."""
