"""The labels tether puts on what it runs (containers, Swarm services): how it recognises its own
work, and the only things it ever touches."""

LABEL_PROJECT = "dev.tether.project"
LABEL_VERSION = "dev.tether.deployment"
LABEL_SPEC_HASH = "dev.tether.spec-hash"
LABEL_RESTART = "dev.tether.restart-token"
LABEL_INSTALLATION = "dev.tether.installation"
LABEL_VOLUME = "dev.tether.volume"  # on a volume: the project's name for it
LABEL_OWNER = "dev.tether.owner"  # on a volume: the owner of the project it was created for
# On the short-lived container that mounts a volume for an export or import (the installation):
# without a project's labels, so no pass ever sees it.
LABEL_VOLUME_HELPER = "dev.tether.volume-helper"
