"""Numbered SQL migrations, shipped as package data and applied by tether.api.migrator."""
