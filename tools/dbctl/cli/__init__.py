"""The command line: main (the click group, lazy command loading, the one error
boundary) and one thin module per command group: engine (wait, migrate, verify,
status, new, rollback), checks (drift, lint, test), devdata (seed, reset),
local, dev (dev, doctor, health-check), serve, k8s (render, k8s).

Imports: anything. Each module parses, calls the library, prints.
"""
