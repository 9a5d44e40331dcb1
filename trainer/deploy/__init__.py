"""Deployment: ONNX export with its parity check and int8 copy, and test-time throughput and latency."""
