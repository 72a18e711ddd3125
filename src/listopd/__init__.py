"""listopd: on-policy distillation with reward extrapolation, and the closed-form extrapolation cliff."""

__version__ = "0.1.0"
