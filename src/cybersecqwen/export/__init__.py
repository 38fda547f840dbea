"""GGUF export: convert.py (HF -> GGUF), parity.py (gates), quantize.py, plan.py (memory), modelfile.py; gguf.py runs the verb."""
