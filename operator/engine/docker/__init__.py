"""The engine runtime's Docker driver: the only code of the engine runtime that talks to Docker."""
