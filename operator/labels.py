"""The labels tether puts on what it runs (containers, Swarm services): how it recognises its own
work, and the only things it ever touches."""

LABEL_PROJECT = "dev.tether.project"
LABEL_VERSION = "dev.tether.deployment"
LABEL_SPEC_HASH = "dev.tether.spec-hash"
LABEL_RESTART = "dev.tether.restart-token"
LABEL_INSTALLATION = "dev.tether.installation"
