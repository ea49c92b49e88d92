"""The wire contract: envelope, event schemas, routing keys, versions."""
