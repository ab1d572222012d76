"""OpenAI's Batch API objects, field for field as the ``openai`` SDK reads them
(``openai.types.FileObject``, ``Batch``, ``BatchRequestCounts``, ``BatchError``), and the
lines of the input, output and error files."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Endpoint = Literal["/v1/chat/completions", "/v1/embeddings"]
ENDPOINTS: tuple[str, ...] = ("/v1/chat/completions", "/v1/embeddings")
Status = Literal["validating", "failed", "in_progress", "finalizing", "completed", "expired",
                 "cancelling", "cancelled"]
ACTIVE: tuple[str, ...] = ("validating", "in_progress", "finalizing", "cancelling")


class FileObject(msgspec.Struct, frozen=True):
    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str  # "batch" (uploaded), "batch_output" (written by a batch)
    object: str = "file"
    status: str = "processed"
    expires_at: int | None = None
    status_details: str | None = None


class FileDeleted(msgspec.Struct, frozen=True):
    id: str
    deleted: bool
    object: str = "file"


class BatchError(msgspec.Struct, frozen=True):
    code: str | None = None
    message: str | None = None
    param: str | None = None
    line: int | None = None


class BatchErrors(msgspec.Struct, frozen=True):
    data: list[BatchError]
    object: str = "list"


class RequestCounts(msgspec.Struct, frozen=True):
    total: int
    completed: int
    failed: int


class InputTokensDetails(msgspec.Struct, frozen=True):
    cached_tokens: int = 0


class OutputTokensDetails(msgspec.Struct, frozen=True):
    reasoning_tokens: int = 0


class BatchUsage(msgspec.Struct, frozen=True):
    """The tokens the batch's answered lines used (as each line's ``usage`` reported)."""

    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: InputTokensDetails = InputTokensDetails()
    output_tokens_details: OutputTokensDetails = OutputTokensDetails()


class Batch(msgspec.Struct, frozen=True):
    id: str
    endpoint: str
    input_file_id: str
    completion_window: str
    status: Status
    created_at: int
    request_counts: RequestCounts
    object: str = "batch"
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: BatchErrors | None = None
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    metadata: dict[str, str] | None = None
    usage: BatchUsage | None = None


class Page(msgspec.Struct, frozen=True):
    """A cursor page as the SDK's ``SyncCursorPage`` reads it (``after`` = ``last_id``)."""

    data: list[Any]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None
    object: str = "list"


class InputLine(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One request of an input file."""

    custom_id: str
    method: str
    url: str
    body: dict[str, Any]


class LineResponse(msgspec.Struct, frozen=True):
    status_code: int
    request_id: str
    body: Any


class LineError(msgspec.Struct, frozen=True):
    code: str
    message: str


class OutputLine(msgspec.Struct, frozen=True):
    """One line of an output file (a 2xx answer) or an error file (an error answer, or a
    line the batch could not run: ``response`` null, ``error`` set)."""

    id: str
    custom_id: str
    response: LineResponse | None
    error: LineError | None


class CreateBatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /v1/batches``."""

    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None = None
    output_expires_after: dict[str, Any] | None = None  # accepted; outputs live with the batch


ENCODER = msgspec.json.Encoder()
CREATE_DECODER = msgspec.json.Decoder(CreateBatch)
