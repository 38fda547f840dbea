"""What the jobs share: sentence splitting and the default needs-review threshold."""

from __future__ import annotations

from cybersecqwen.heads.model import SENTENCE  # noqa: F401 - one definition of where sentences end

REVIEW_BELOW = 0.5  # below this confidence an answer is flagged needs_review, until a threshold is learned on validation
