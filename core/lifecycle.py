"""Colony states and which operations each allows."""

from __future__ import annotations

SPAWNING = "spawning"
PROVISIONING = "provisioning"
BUILDING = "building"
STARTING = "starting"
RUNNING = "running"
STOPPING = "stopping"
STOPPED = "stopped"
FAILED = "failed"
DESTROYING = "destroying"  # recorded before a destroy ends anything: gc finishes one that was interrupted

STATES = (SPAWNING, PROVISIONING, BUILDING, STARTING, RUNNING, STOPPING, STOPPED, FAILED, DESTROYING)
# A colony in one of these has work in flight; if nobody holds its lock, that work was interrupted (kill -9).
IN_FLIGHT = (SPAWNING, PROVISIONING, BUILDING, STARTING, STOPPING, DESTROYING)
STARTABLE = (STOPPED, FAILED)
