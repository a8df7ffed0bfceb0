"""HAProxy's configuration, rendered from tether's settings (via `haproxy.proxy_config`).
Pure: text in, text out; nothing here touches a file or a socket (`process.py` writes what this
renders, `admin.py` talks to it).

One frontend, in TCP mode, binds the whole port range, so that adding, switching or removing a
project never needs a reload. A connection's destination port is looked up in the route map (a
runtime map, changed on the admin socket): its value is a `Route` as `Route.encode` writes it,
`MODE:HOST:PORT:SINCE:PROJECT` (held: `MODE:hold:0:SINCE:PROJECT`). HTTP routes switch the
connection to HTTP and look the route up again for every request, so a switch applies to the
next request even on a kept-alive client connection; TCP routes set the destination once per
connection (open ones drain). A port not in the map is refused (closed at once). A held route
waits in a Lua action that polls the map, for up to the hold time, then answers 503 (HTTP) or
closes (TCP).

Server-side connections are kept alive and reused: HAProxy hashes the destination address of a
server without an address (`0.0.0.0:0`) into the key of its idle connections, so a request is
never sent on a kept-alive connection to the upstream it was routed to before a switch (checked
by `tests/test_proxy.py`). `option http-server-close` would be correct too, but measured here it
costs about 0.37 ms per request (p50, a new upstream connection each time) against 0.11 ms.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

FRONTEND = "endpoints"
HTTP_BACKEND = "http_upstream"
TCP_BACKEND = "tcp_upstream"
SERVER = "upstream"
# A value `Route.encode` writes (IPv4 upstreams); the proxy refuses any other.
VALID = r"^(http|tcp):([0-9.]+:[0-9]+|hold:0):[0-9.]+:[a-z][a-z0-9-]*$"
# How often a held request looks at the map again.
HOLD_POLL_MS = 25
# An old worker left by a reload gets this long to finish what it serves.
HARD_STOP_AFTER_S = 60


@dataclass(frozen=True)
class ProxyConfig:
    """Where the proxy lives and what it binds: everything the rendering and the admin client
    need. `directory` holds the rendered files and the map; `socket` is the admin socket."""

    directory: Path
    socket: Path
    address: str
    first_port: int
    last_port: int
    hold_s: float

    @property
    def config_file(self) -> Path:
        return self.directory / "haproxy.cfg"

    @property
    def map_file(self) -> Path:
        return self.directory / "routes.map"

    @property
    def lua_file(self) -> Path:
        return self.directory / "hold.lua"

    @property
    def pid_file(self) -> Path:
        return self.directory / "haproxy.pid"


def _bind(config: ProxyConfig) -> str:
    host = f"[{config.address}]" if ":" in config.address else config.address
    return f"{host}:{config.first_port}-{config.last_port}"


def render_config(config: ProxyConfig) -> str:
    """haproxy.cfg: master-worker, the admin socket, the one frontend and its two backends."""
    routes = str(config.map_file)
    hold_ms = round(config.hold_s * 1000)
    # A held TCP connection waits in a `tcp-request content` rule: inspection must outlast it.
    inspect_ms = hold_ms + 1000
    lookup = f"var(sess.port),map_int({routes})"
    return f"""\
# Written by tether (tether.operator.haproxy.config) at each start of the proxy: edits are lost.
global
    master-worker
    # A second proxy on the same port range must fail to bind, not silently share the ports
    # (SO_REUSEPORT would let both bind and split the connections between them). Reloads do
    # not need it: the new worker takes the listeners from the old one (`expose-fd listeners`).
    noreuseport
    stats socket {config.socket} mode 600 level admin expose-fd listeners
    # After a reload, the old worker finishes its requests and connections for up to this long.
    hard-stop-after {HARD_STOP_AFTER_S}s
    # Counts Lua run time only, not the sleeps of a held request.
    tune.lua.session-timeout {inspect_ms}ms
    lua-load {config.lua_file}

defaults
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    timeout http-request 30s
    timeout http-keep-alive 60s
    # A soft stop (reload) closes an idle kept-alive client connection only after its next
    # response (which says `Connection: close`), never under a request just sent.
    option idle-close-on-response
    # A request sent on a reused idle upstream connection that the upstream had just closed
    # goes again on a new one.
    retries 3
    retry-on conn-failure empty-response

frontend {FRONTEND}
    mode tcp
    bind {_bind(config)}
    tcp-request inspect-delay {inspect_ms}ms
    tcp-request connection set-var(sess.port) dst_port
    tcp-request connection reject unless {{ {lookup} -m found }}
    tcp-request content set-var(sess.route) {lookup}
    tcp-request content switch-mode http if {{ var(sess.route),field(1,:) -m str http }}
    tcp-request content lua.tether_hold sess.route if {{ var(sess.route),field(2,:) -m str hold }}
    # Gone meanwhile, or a value tether did not write (edited by hand): refused.
    tcp-request content reject unless {{ var(sess.route) -m reg {VALID} }}
    tcp-request content reject if {{ var(sess.route),field(2,:) -m str hold }}
    tcp-request content set-dst var(sess.route),field(2,:)
    tcp-request content set-dst-port var(sess.route),field(3,:)
    # HTTP (after switch-mode): the route of each request, looked up afresh.
    http-request set-var(txn.route) {lookup}
    http-request lua.tether_hold txn.route if {{ var(txn.route),field(2,:) -m str hold }}
    http-request return status 503 content-type text/plain string "no route" \
unless {{ var(txn.route) -m reg {VALID} }}
    http-request return status 503 content-type text/plain string "held too long" \
if {{ var(txn.route),field(2,:) -m str hold }}
    http-request set-dst var(txn.route),field(2,:)
    http-request set-dst-port var(txn.route),field(3,:)
    use_backend {HTTP_BACKEND} if {{ var(sess.route),field(1,:) -m str http }}
    default_backend {TCP_BACKEND}

backend {HTTP_BACKEND}
    mode http
    server {SERVER} 0.0.0.0:0

backend {TCP_BACKEND}
    mode tcp
    server {SERVER} 0.0.0.0:0
"""


def render_lua(config: ProxyConfig) -> str:
    """The hold action: polls the route map (the same map the frontend reads, changed at run
    time) until the route is no longer held or the hold time has passed, then stores the route
    in the variable it was given (unchanged, and still held, if the time ran out)."""
    return f"""\
-- Written by tether (tether.operator.haproxy.config) at each start of the proxy.
local routes = Map.new("{config.map_file}", Map._int)
local hold_ms = {round(config.hold_s * 1000)}

local function now_ms()
    local now = core.now()
    return now.sec * 1000 + now.usec / 1000
end

core.register_action("tether_hold", {{"tcp-req", "http-req"}}, function(txn, var)
    local port = tostring(txn:get_var("sess.port"))
    local until_ms = now_ms() + hold_ms
    while true do
        local value = routes:lookup(port)
        if value == nil then
            txn:unset_var(var)
            return
        end
        if not value:find("^%a+:hold:") then
            txn:set_var(var, value)
            return
        end
        if now_ms() >= until_ms then
            return
        end
        core.msleep({HOLD_POLL_MS})
    end
end, 1)
"""


def render_map(routes: Mapping[int, str]) -> str:
    """The route map file: one `PORT VALUE` line per route, in port order."""
    lines = [f"{port} {value}\n" for port, value in sorted(routes.items())]
    return "# tether's routes: PORT MODE:HOST:PORT:SINCE (rewritten with every change)\n" + "".join(
        lines
    )
