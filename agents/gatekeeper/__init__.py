"""The gatekeeper: the broker's users agree with the ledger's identities."""
