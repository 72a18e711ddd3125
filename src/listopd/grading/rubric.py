"""Versioned grading rubrics for `listopd judge`: load one, render its prompt for a task and a model output,
and parse the judge's answer strictly.

A rubric is a Markdown file with YAML front matter (the body is the prompt template) or a YAML file with a
`prompt` key:

    ---
    name: listwise-ranking
    version: ranking-v1          # required; part of the judge's cache key, bump it when the rubric changes
    scale: {min: 1, max: 5}      # integer grades, inclusive
    grade_format: "GRADE: <n>"   # the exact final line the judge must write; <n> is the integer grade
    temperature: 0               # optional (default 0)
    max_tokens: 1024             # optional (default 1024)
    system: ...                  # optional system message
    description: ...             # optional free text for people (not sent)
    ---
    Prompt text with {{context}}, {{candidates}}, {{k}}, {{ids}}, {{task_id}} and {{output}} ...

Placeholders are `{{name}}`; an unknown one, or a prompt without {{output}}, is refused at load. Inserted
text is not scanned again, so an output that contains "{{context}}" stays literal.

Parsing (never guessing): the answer's last non-empty line, stripped, must match grade_format exactly with
an integer for <n>, that integer must be inside the scale, and no other line may also be a grade line.
Anything else — "GRADE: 4.5", "GRADE: +4", "GRADE: 04", "**GRADE: 4**", a grade followed by more text, two grade lines, an empty
answer — is unparseable, with the reason.

The built-in rubric `ranking_v1` (src/listopd/grading/rubrics/ranking_v1.md) grades a listwise ranking output.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from listopd.util.errors import InputError

PLACEHOLDERS = ("task_id", "context", "candidates", "k", "ids", "output")
FIELDS = ("name", "version", "description", "scale", "grade_format", "system", "prompt", "temperature",
          "max_tokens")
BUILTIN = ("ranking_v1",)
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_]\w*)\s*\}\}")


@dataclass(frozen=True)
class Rubric:
    name: str
    version: str
    prompt: str
    scale_min: int
    scale_max: int
    grade_format: str
    system: str | None = None
    temperature: float = 0.0
    max_tokens: int = 1024
    path: str = ""
    sha256: str = ""  # of the file's bytes: two results with one version but different text differ here

    @property
    def grade_line(self) -> re.Pattern:
        before, after = self.grade_format.split("<n>")
        return re.compile(re.escape(before) + r"(-?(?:0|[1-9][0-9]*))" + re.escape(after))

    def render(self, task, output: str) -> str:
        values = {
            "task_id": task.id,
            "context": task.context.strip(),
            "candidates": "\n".join(f"[{c.id}] {' '.join(c.text.split())}" for c in task.candidates),
            "k": str(task.k),
            "ids": ", ".join(task.candidate_ids),
            "output": output,
        }
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.prompt)

    def messages(self, task, output: str) -> list[dict]:
        user = {"role": "user", "content": self.render(task, output)}
        return ([{"role": "system", "content": self.system}] if self.system else []) + [user]

    def parse_grade(self, text: str | None) -> tuple[int | None, str | None]:
        """(grade, None) for a well-formed answer, else (None, why it is unparseable)."""
        lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
        if not lines:
            return None, "empty answer"
        pattern = self.grade_line
        match = pattern.fullmatch(lines[-1])
        if match is None:
            return None, f"the last line is not of the form {self.grade_format!r}: {lines[-1][:80]!r}"
        n_grade_lines = sum(1 for line in lines if pattern.fullmatch(line))
        if n_grade_lines > 1:
            return None, f"{n_grade_lines} grade lines (exactly one, the last, is allowed)"
        grade = int(match.group(1))
        if not self.scale_min <= grade <= self.scale_max:
            return None, f"grade {grade} outside the scale {self.scale_min}..{self.scale_max}"
        return grade, None


def load_rubric(path_or_name: str) -> Rubric:
    """A rubric from a .md (front matter + prompt) or .yaml/.yml file, or a built-in name (ranking_v1)."""
    path = Path(path_or_name)
    if path.is_file():
        data, where = path.read_bytes(), str(path)
    elif str(path_or_name) in BUILTIN:
        resource = importlib.resources.files("listopd.grading") / "rubrics" / f"{path_or_name}.md"
        data, where = resource.read_bytes(), f"{path_or_name}.md"
        path = Path(where)
    else:
        raise InputError(f"no such rubric file (built-in rubrics: {', '.join(BUILTIN)})", path=str(path_or_name))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text", path=where) from None
    fields = _read_fields(text, where, yaml_file=path.suffix in (".yaml", ".yml"))
    return _from_fields(fields, where, hashlib.sha256(data).hexdigest())


def _read_fields(text: str, where: str, *, yaml_file: bool) -> dict:
    if yaml_file:
        fields = _yaml(text, where)
    else:
        lines = text.splitlines()
        if not lines or lines[0].strip() != "---":
            raise InputError("a Markdown rubric must start with YAML front matter between '---' lines", path=where)
        end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), None)
        if end is None:
            raise InputError("the front matter has no closing '---' line", path=where)
        fields = _yaml("\n".join(lines[1:end]), where)
        if "prompt" in fields:
            raise InputError("in a Markdown rubric the prompt is the text after the front matter", path=where,
                             field="prompt")
        fields["prompt"] = "\n".join(lines[end + 1:])
    return fields


def _yaml(text: str, where: str) -> dict:
    try:
        fields = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise InputError(f"invalid YAML: {getattr(e, 'problem', None) or e}", path=where, line=line) from None
    if not isinstance(fields, dict):
        raise InputError("the rubric must be a mapping of fields", path=where)
    return fields


def _from_fields(f: dict, where: str, sha256: str) -> Rubric:
    def bad(field, reason):
        return InputError(reason, path=where, field=field)

    for key in f:
        if key not in FIELDS:
            raise bad(key, f"unknown field (known: {', '.join(FIELDS)})")
    version = f.get("version")
    if version is None or isinstance(version, bool) or not isinstance(version, (str, int, float)) or not str(version).strip():
        raise bad("version", "required: a string (or number) naming this rubric's version")
    scale = f.get("scale")
    if not isinstance(scale, dict) or set(scale) != {"min", "max"}:
        raise bad("scale", "required: {min: <int>, max: <int>}")
    lo, hi = scale["min"], scale["max"]
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in (lo, hi)) or lo >= hi:
        raise bad("scale", f"min and max must be integers with min < max, got {lo!r}, {hi!r}")
    fmt = f.get("grade_format")
    if not isinstance(fmt, str) or fmt.count("<n>") != 1 or "\n" in fmt or fmt != fmt.strip():
        raise bad("grade_format", "required: one line containing <n> exactly once, e.g. 'GRADE: <n>'")
    prompt = f.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise bad("prompt", "required: the prompt template")
    names = {m.group(1) for m in _PLACEHOLDER.finditer(prompt)}
    unknown = sorted(names - set(PLACEHOLDERS))
    if unknown:
        raise bad("prompt", f"unknown placeholder {{{{{unknown[0]}}}}} (known: {', '.join(PLACEHOLDERS)})")
    if "output" not in names:
        raise bad("prompt", "the prompt never shows the judge the output: add {{output}}")
    system = f.get("system")
    if system is not None and not isinstance(system, str):
        raise bad("system", "must be a string")
    temperature = f.get("temperature", 0.0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
        raise bad("temperature", f"must be a number in [0, 2], got {temperature!r}")
    max_tokens = f.get("max_tokens", 1024)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise bad("max_tokens", f"must be a positive integer, got {max_tokens!r}")
    name = f.get("name", Path(where).stem)
    return Rubric(name=str(name), version=str(version).strip(), prompt=prompt.strip() + "\n", scale_min=lo,
                  scale_max=hi, grade_format=fmt, system=system, temperature=float(temperature),
                  max_tokens=max_tokens, path=where, sha256=sha256)
