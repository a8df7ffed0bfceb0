"""The web console: a second client of the HTTP API, served by it at `/` (docs/console.md).

Plain HTML, CSS and JavaScript modules in `static/`, served as package data: no build step.
"""

from tether.api.console.routes import install

__all__ = ["install"]
