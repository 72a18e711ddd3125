"""LLM-as-judge grading of model outputs: one chat completion per task through listopd.grading.chat_client, the
answer parsed strictly by the rubric (listopd.grading.rubric), one record per task and a summary.

Each task ends in exactly one status:
    graded       the judge answered and the answer has a grade in the rubric's format and scale
    unparseable  the judge answered, but not in the rubric's format (the raw answer and the reason are kept;
                 nothing is guessed from it)
    failed       no usable answer: timeouts, connection errors or 5xx after all retries, a 4xx, a malformed
                 response (the last error is kept)
    over_budget  never sent, because --max-requests was spent

The request body is {"model", "messages" (rubric.messages), "temperature", "max_tokens"}; the rubric sets the
sampling settings, so its version covers them. Records are in task order and each depends only on its own
request, so --concurrency changes nothing but the speed — except, when --max-requests runs out, which
tasks were still waiting.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from listopd.grading.chat_client import ChatClient
from listopd.grading.rubric import Rubric

STATUSES = ("graded", "unparseable", "failed", "over_budget")


def request_body(rubric: Rubric, task, output: str, *, model: str, max_tokens: int | None = None) -> dict:
    return {"model": model, "messages": rubric.messages(task, output), "temperature": rubric.temperature,
            "max_tokens": max_tokens or rubric.max_tokens}


def grade_one(client: ChatClient, rubric: Rubric, task, output: str, *, model: str,
              max_tokens: int | None = None) -> dict:
    reply = client.complete(request_body(rubric, task, output, model=model, max_tokens=max_tokens))
    record = {"id": task.id, "status": reply.status, "grade": None, "reason": reply.error, "raw": reply.content,
              "cached": reply.cached, "attempts": reply.attempts}
    if reply.status == "ok":
        grade, why = rubric.parse_grade(reply.content)
        record.update(status="graded" if grade is not None else "unparseable", grade=grade, reason=why)
    return record


def judge(client: ChatClient, rubric: Rubric, tasks, outputs: dict[str, str], *, model: str,
          concurrency: int = 4, max_tokens: int | None = None) -> tuple[list[dict], dict]:
    """Grade outputs[task.id] for every task; returns (records in task order, summary)."""
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="listopd-judge") as pool:
        records = list(pool.map(
            lambda t: grade_one(client, rubric, t, outputs[t.id], model=model, max_tokens=max_tokens), tasks))
    return records, summarise(records, rubric=rubric, client=client, model=model, max_tokens=max_tokens,
                              elapsed_s=time.monotonic() - t0)


def summarise(records: list[dict], *, rubric: Rubric, client: ChatClient, model: str, max_tokens: int | None,
              elapsed_s: float) -> dict:
    counts = {s: sum(r["status"] == s for r in records) for s in STATUSES}
    grades = [r["grade"] for r in records if r["status"] == "graded"]
    return {
        "rubric": {"name": rubric.name, "version": rubric.version, "path": rubric.path, "sha256": rubric.sha256,
                   "scale": [rubric.scale_min, rubric.scale_max], "grade_format": rubric.grade_format},
        "judge": {"endpoint": client.endpoint, "model": model, "temperature": rubric.temperature,
                  "max_tokens": max_tokens or rubric.max_tokens},
        "tasks": len(records),
        **counts,
        "mean_grade": sum(grades) / len(grades) if grades else None,
        "grade_counts": {str(g): grades.count(g) for g in range(rubric.scale_min, rubric.scale_max + 1)},
        "requests_sent": client.budget.sent,
        "max_requests": client.budget.limit,
        "cache_hits": client.cache_hits,
        "elapsed_s": round(elapsed_s, 3),
    }


def format_summary(s: dict) -> str:
    mean = "-" if s["mean_grade"] is None else f"{s['mean_grade']:.3f}"
    hist = "  ".join(f"{g}:{n}" for g, n in s["grade_counts"].items())
    budget = "" if s["max_requests"] is None else f" (budget {s['max_requests']})"
    return "\n".join([
        f"rubric {s['rubric']['name']} {s['rubric']['version']}   judge {s['judge']['model']} at "
        f"{s['judge']['endpoint']}",
        f"tasks {s['tasks']}   graded {s['graded']}   unparseable {s['unparseable']}   failed {s['failed']}   "
        f"over budget {s['over_budget']}",
        f"mean grade {mean}   grades {hist}",
        f"requests sent {s['requests_sent']}{budget}   cache hits {s['cache_hits']}   {s['elapsed_s']:.1f} s",
    ])
