"""Webhooks, the operator's side: sign each delivery of the outbox and POST it, bounded."""
