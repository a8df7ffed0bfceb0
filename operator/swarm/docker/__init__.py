"""The swarm runtime's only way to Docker."""
