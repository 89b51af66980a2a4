"""How every benchmark script ends: its record as JSON and Markdown (printed too), a plot when matplotlib can draw
it, and the exit status of its target checks."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


def finish(record: dict, output_dir: Path, stem: str, markdown: Callable, plot: Callable, smoke: bool) -> int:
    """Write `<stem>.json`, `<stem>.md` and `<stem>.png` under `output_dir`; 1 when a target check failed (0 in smoke
    mode, whose tiny sizes report the targets without enforcing them)."""
    record["passed"] = all(check["passed"] for check in record["checks"].values())
    (output_dir / f"{stem}.json").write_text(json.dumps(record, indent=1))
    text = markdown(record)
    (output_dir / f"{stem}.md").write_text(text)
    print(text)
    try:
        plot(record, output_dir / f"{stem}.png")
    except Exception as error:  # the results are on disk; the plot is optional
        print(f"plot: not drawn ({error})")
    if smoke:
        return 0
    return 0 if record["passed"] else 1
