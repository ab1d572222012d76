"""The gateway's stages, one module each (see ``service.pipeline`` for the contract and
``service.gateway.STAGES`` for their order)."""
