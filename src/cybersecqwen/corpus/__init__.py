"""The SFT corpus: registered example builders (one per task), decontamination against CTI-Bench, the build.

To add a task's examples: `@builder("task-name", needs={"source": "why"})` in builders.py; see docs/architecture.md.
"""
