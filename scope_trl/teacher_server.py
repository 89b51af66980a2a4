"""A teacher that lives on a vLLM server: the student's token ids are scored over HTTP by TRL's `VLLMClient`.

The server is a stock `vllm serve <teacher>`; TRL's `VLLMClient.get_sequence_logprobs` posts each sequence (prompt +
completion token ids) to its OpenAI-compatible `/v1/completions` with `prompt_logprobs`, and vLLM returns, for every
prompt position, the log-prob of the token actually there (plus the top-k, of which we ask for one). A sampled token
the server does not report comes back as `-inf` and then follows the trainer's `nonfinite_teacher_scores` policy.
"""

from __future__ import annotations

import contextlib
from unittest import mock

import torch
from trl.generation import vllm_client
from trl.import_utils import is_requests_available, is_vllm_available


@contextlib.contextmanager
def _without_vllm_import_check():
    """TRL's client refuses to start without vLLM installed because weight synchronisation needs it; scoring is plain
    HTTP, so a training process that only talks to a remote teacher does not need vLLM (whose wheels pin torch)."""
    if is_vllm_available():
        yield
        return
    with mock.patch.object(vllm_client, "is_vllm_available", return_value=True):
        yield


class TeacherServer:
    """The teacher's vLLM server at `base_url`, as seen by one training process.

    Args:
        base_url: `http(s)://host:port` of the server.
        timeout: seconds to wait for the server's health check at construction before failing.
    """

    def __init__(self, base_url: str, timeout: float):
        if not is_requests_available():
            raise ImportError(
                f"A teacher server ({base_url}) is reached over HTTP with `requests`, which is not installed: "
                "pip install 'scope-trl[teacher-server]' (or pip install requests)."
            )
        self.base_url = base_url
        try:
            with _without_vllm_import_check():
                self.client = vllm_client.VLLMClient(base_url=base_url, connection_timeout=timeout)
        except Exception as error:
            raise ConnectionError(
                f"Could not reach the teacher's vLLM server at {base_url} (teacher_model_server_url, or "
                f"teacher_model_server_host/_port) within teacher_model_server_timeout={timeout} s: {error}. Start it "
                "with `vllm serve <teacher>` and check the address, or unset those fields to load the teacher locally."
            ) from error
        self.model_name: str = self.client.model  # the id the server reports in /v1/models

    def score(self, sequences: list[list[int]], completion_starts: list[int]) -> list[list[float]]:
        """The server's log-prob of each completion token of each sequence.

        Args:
            sequences: token ids, prompt then completion, without padding; one list per rollout.
            completion_starts: index of each sequence's first completion token (its prompt length).

        Returns:
            One list per sequence of `len(sequence) - start` log-probs; `-inf` where the server did not return the
            sampled token (or returned NaN).
        """
        try:
            result = self.client.get_sequence_logprobs(sequences, completion_starts, top_logprobs=1, temperature=1.0)
        except Exception as error:
            raise RuntimeError(
                f"The teacher's vLLM server at {self.base_url} failed to score {len(sequences)} sequences "
                f"(POST {self.base_url}/v1/completions with prompt_logprobs): {error}"
            ) from error
        scores = [[position[0] for position in row] for row in result["actual_logprobs"]]
        for row, sequence, start in zip(scores, sequences, completion_starts, strict=True):
            if len(row) != len(sequence) - start:
                raise RuntimeError(
                    f"The teacher's vLLM server at {self.base_url} returned {len(row)} log-probs for a completion of "
                    f"{len(sequence) - start} tokens: it does not speak vLLM's prompt_logprobs format."
                )
        return scores


def unpadded_sequences(
    prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor, completion_mask: torch.Tensor
) -> tuple[list[list[int]], list[int]]:
    """Rows of TRL's padded batch (left-padded prompts, right-padded completions) as the unpadded token lists a server
    scores, and the prompt length of each. Shapes: prompts (R, P), completions (R, C); masks are 0/1.

    A completion keeps every token up to its last unmasked one, so the lists line up with the completion columns.
    """
    positions = torch.arange(1, completion_mask.size(1) + 1, device=completion_mask.device)
    completion_lengths = (completion_mask * positions).amax(1).tolist()
    sequences, starts = [], []
    for prompt, keep, completion, length in zip(
        prompt_ids.tolist(), prompt_mask.bool().tolist(), completion_ids.tolist(), completion_lengths, strict=True
    ):
        prompt = [token for token, kept in zip(prompt, keep, strict=True) if kept]
        sequences.append(prompt + completion[:length])
        starts.append(len(prompt))
    return sequences, starts
