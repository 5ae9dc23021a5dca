"""Daemon composition, the control socket, and the `moltsched` command line."""
