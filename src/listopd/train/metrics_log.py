"""`RUN/metrics.jsonl`: one JSON object per step, append-only and fsynced, consistent across resumes."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from listopd.util.errors import ListopdError
from listopd.util.io import atomic_write_text


class MetricsLog:
    """Append-only `metrics.jsonl` (one JSON object per step, fsynced) plus TensorBoard when installed.

    On resume from checkpoint step s, records with step > s (written after that checkpoint by the run
    that crashed) are dropped first, so the file has no duplicated or missing steps.
    """

    def __init__(self, run_dir: Path, resume_step: int | None, enabled: bool = True):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        keep = []
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a line torn by a crash mid-write
                if resume_step is not None and rec.get("step", 0) <= resume_step:
                    keep.append(line)
        atomic_write_text(self.path, "".join(line + "\n" for line in keep))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        except Exception:  # noqa: BLE001 - TensorBoard is optional
            self.tb = None

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:  # a torn last line is dropped on resume
            raise ListopdError(f"cannot write {self.path}: {e.strerror or e}; the last checkpoint is intact") from e
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step" and v is not None and math.isfinite(v):
                    self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
