"""Launched on 2 processes by tests/test_teacher.py: process 0 asks a failing teacher server to score one row,
process 1 has no row to score. Each records the error it raised, then both meet at a collective; rank 0 writes the
report. Usage: served_teacher_failure.py SERVER_URL RESULT_JSON."""

import json
import sys

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from scope_trl.teacher import ServedTeacher, TeacherServerError


def main(url: str, result: str) -> None:
    accelerator = Accelerator(cpu=True)
    served = ServedTeacher(
        url, startup_timeout=30, request_timeout=30, max_retries=2, backoff=0.0, accelerator=accelerator
    )
    input_ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    rows = torch.tensor([accelerator.process_index == 0])
    message = None
    try:
        served.score(input_ids, torch.ones_like(input_ids), 3, rows, batch_size=1)
    except TeacherServerError as error:
        message = str(error)
    messages = gather_object([message])
    met = gather_object([True])  # a collective after the failure: reached by every process, no hang
    if accelerator.is_main_process:
        with open(result, "w") as f:
            json.dump({"messages": messages, "met_after_failure": met}, f)


if __name__ == "__main__":
    main(*sys.argv[1:3])
