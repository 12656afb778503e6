//! ONNX Runtime backend (ort, load-dynamic) and execution-provider profiles
