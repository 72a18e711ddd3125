"""Layer 3 (beside training): grading model outputs with a versioned rubric through an OpenAI-compatible endpoint."""
