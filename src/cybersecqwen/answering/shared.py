"""What the jobs share: sentence splitting and the default needs-review threshold."""

from __future__ import annotations

import re

SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
REVIEW_BELOW = 0.5  # below this confidence an answer is flagged needs_review, until a threshold is learned on validation
