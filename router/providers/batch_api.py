"""A provider's own batch API, as the gateway drives it: one small Protocol, its shared
types, and the one registry of the adapters that have one.

``service.batch_native`` submits a group of chat requests (``encode`` then ``submit``),
polls (``get``), cancels, and reads the results back by custom id (``results``); each
answer is translated by the adapter's own live translation (``completion``), and an error
answer mapped as a live one would be (``error``). Two implementations:

- ``router.providers.openai_batches``: OpenAI's Files + Batches API (``openai``,
  ``openai-compatible`` deployments);
- ``router.providers.anthropic_batches``: Anthropic's Message Batches API.

A deployment opts in with ``native_batch: true`` (``BatchSettings``); the registry is
``router.providers.native_batch``.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from router.providers._base import ProviderError
from router.wire.openai import ChatCompletion, ChatRequest


class ProviderBatch(msgspec.Struct):
    """What the gateway reads of a provider's batch: its id, the provider's own status word,
    and whether it ended (its results are then final)."""

    id: str
    status: str
    ended: bool = False
    output_file_id: str | None = None  # OpenAI: where the answers are
    error_file_id: str | None = None


class LineResponse(msgspec.Struct):
    """A line the provider answered: its HTTP status and body (the API's own shape)."""

    status_code: int
    body: Any = None


class ResultLine(msgspec.Struct):
    """One request's outcome; ``response`` None when the provider never ran it (the batch
    failed, expired or was cancelled first)."""

    custom_id: str
    response: LineResponse | None = None


class BatchAPI(Protocol):
    """One deployment's batch API (see the module docstring)."""

    name: str

    def encode(self, lines: list[tuple[str, ChatRequest]]) -> bytes:
        """What ``submit`` sends for these (custom id, request) pairs."""
        ...

    async def submit(self, payload: bytes, tag: str) -> ProviderBatch:
        """Start a batch of ``payload``, tagged ``tag`` where the API keeps a tag."""
        ...

    async def find(self, tag: str, count: int, since: float) -> ProviderBatch | None:
        """The batch ``submit`` started for ``tag`` (``count`` requests, not before
        ``since``), if the upstream has one: a submission whose answer was lost."""
        ...

    async def get(self, batch_id: str) -> ProviderBatch: ...

    async def cancel(self, batch_id: str) -> ProviderBatch: ...

    async def results(self, batch: ProviderBatch) -> dict[str, ResultLine]:
        """Every request's outcome by custom id (an ended batch)."""
        ...

    def completion(self, request: ChatRequest, body: Any) -> ChatCompletion:
        """A 2xx line's body as ours."""
        ...

    def error(self, status: int, body: Any) -> ProviderError:
        """An error line as the adapter's error (mapped as a live answer's would be)."""
        ...
