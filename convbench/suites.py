"""Benchmark suites, for users: the built-in ones, and suites read from their own models.

    import convbench.suites as suites
    cases = suites.from_torch(model, torch.zeros(1, 3, 224, 224))     # forward hooks
    cases = suites.from_onnx("model.onnx", batch=8)                    # ONNX shape inference

Each Case is a named problem with the number of times the model runs it. The definitions live in
convbench.harness.suites (and the model readers in convbench.harness.model).
"""
from convbench.harness.model import ModelError
from convbench.harness.suites import SUITES, Case, from_file, from_onnx, from_torch, load_suite

__all__ = ["SUITES", "Case", "ModelError", "from_file", "from_onnx", "from_torch", "load_suite"]
