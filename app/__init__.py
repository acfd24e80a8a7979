"""kokoro-stream: a streaming text-to-speech server for Kokoro-82M on ONNX Runtime."""
