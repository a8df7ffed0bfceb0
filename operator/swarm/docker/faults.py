"""How the swarm driver reports what the Swarm manager did not do: the runtime seam's faults."""

from __future__ import annotations

from tether.operator.runtime import Refused, RuntimeFault


class SwarmFault(RuntimeFault):
    """The Swarm manager did not do what was asked. `status` is its HTTP status code, if any."""


class SwarmUnavailable(SwarmFault):
    """The manager could not be reached, timed out or failed (5xx): worth retrying."""


class SwarmRefused(SwarmFault, Refused):
    """The manager refused a write about the state of a service: gone (404), a name taken
    (409), or a version that is no longer the service's ("update out of sequence"). Not
    believed: the service is read again and the next plan decides."""


class NotASwarmManager(SwarmFault):
    """The Docker engine the settings name is not a Swarm manager: nothing can run there until
    it is (`docker swarm init`, or point TETHER_DOCKER_URL at a manager)."""

    transient = False


class NameConflict(SwarmFault):
    """A service without this installation's labels holds the name tether wants."""

    transient = False
