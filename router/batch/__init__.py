"""The Batch API's wire shapes, input-file checks and durable store (no HTTP here: the
endpoints are ``service.batch_api``, the runner ``service.batch_runner``)."""
