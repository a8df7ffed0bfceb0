"""The swarm runtime: a Docker Swarm cluster, one service per project, placed by Swarm."""
