"""The single writer: append-only event log, projections, outbox, replay."""
