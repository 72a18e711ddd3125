"""Layer 3, training: models, rollouts, checkpoints, the shared run scaffold, and the SFT and ListOPD trainers."""
