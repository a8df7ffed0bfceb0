"""How the driver reports what Docker did not do: the runtime seam's faults, named for Docker."""

from __future__ import annotations

from tether.operator.runtime import Refused, RuntimeFault


class DockerFault(RuntimeFault):
    """Docker did not do what was asked. `status` is its HTTP status code, if it answered."""


class DockerUnavailable(DockerFault):
    """Docker could not be reached, timed out or failed (5xx): worth retrying."""


class DockerRefused(DockerFault, Refused):
    """Docker refused an action about a container's state (404, 409). Not believed: the
    container is inspected again and the next plan decides."""


class ImageNotFound(DockerFault):
    transient = False


class NameConflict(DockerFault):
    """A container without this installation's labels holds the name tether wants."""

    transient = False
