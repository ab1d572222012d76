"""The wire types the gateway speaks, shared by the HTTP front ends (``service``), the provider
adapters (``router.providers``) and the test simulators.

- ``router.wire.openai``: OpenAI chat completions and embeddings (the gateway's own shape:
  every adapter answers in it).
- ``router.wire.anthropic``: Anthropic's Messages API (``/v1/messages`` and the adapter).
"""
