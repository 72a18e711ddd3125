"""Layer 1, the pure core: the closed-form theory (λ*, fixed point), the ListOPD loss, clip modes, the onset rule.
No files, no models."""
