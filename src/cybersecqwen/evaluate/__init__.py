"""The evaluator: plan (settings resolved once), runner (resumable), scoring, stats, reports, compare, rescore."""
