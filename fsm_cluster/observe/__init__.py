"""Observation: status of every node read from the work dir, the timeline picture, state diagrams,
resource figures, the stall watchdog and stacks dumps."""
