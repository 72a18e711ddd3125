"""Layer 4, experiments: calibration, the simulator, λ sweeps, pre-registration, the report, the demo, the
constrained-decoding baseline."""
