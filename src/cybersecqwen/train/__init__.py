"""LoRA SFT (sft.py, resumable) and adapter merge (merge.py)."""
