"""The routes of the API, one module per resource: `/v1` (projects, deployments, lifecycle,
events, watch, logs), and the probes (`health`)."""

# Each /v1 router is made with this prefix rather than given it by `include_router`: only then is
# the prefix part of the route's own `path`, which the request metrics label requests with.
V1 = "/v1"
