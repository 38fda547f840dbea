"""Specialist heads: fast supervised classifiers (TF-IDF word + char n-grams, linear models) trained on the corpus.

They are the learned baseline every language-model number must beat, and the prior the server fuses with the model.
One head per structured task: CWE (text -> CWE id), CVSS (text -> each of the 8 base metrics), ATT&CK (text ->
technique ids, multi-label), threat actor (text -> group, where the corpus has enough examples per group).

Artifacts are plain arrays (`weights.npz`, loaded with allow_pickle=False) and JSON vocabularies, listed with their
sha256 in `manifest.json`: nothing is ever unpickled, and a swapped or edited file is refused. To add a head: a
`HeadSpec` in train.py (which task's examples, how to read the label), and a prediction method in model.py.
"""

from cybersecqwen.heads.model import Heads, load_heads

__all__ = ["Heads", "load_heads"]
