"""Layer 0, the foundation: errors, atomic file writes, the JSONL reader, config dataclasses from YAML and flags."""
