"""coalmine.export — bundle -> ONNX (fp32/fp16/int8) and TensorRT engines, with parity checks."""
