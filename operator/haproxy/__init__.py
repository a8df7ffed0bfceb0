"""The only code that talks to HAProxy: `config` renders its configuration (pure), `admin` drives
its admin socket (the `Proxy` of `tether.operator.routing`), `process` runs and supervises it."""
