"""What runs beside a node's code in its own environment, below the node's life:

* :mod:`.process` — process groups for every child (ended with the node, also after a SIGKILL),
  the one sweep, the subreaper, the node's own scripts directories;
* :mod:`.code`, :mod:`.archive` — fetching the user's code (git, a remote folder or archive);
* :mod:`.certs` — OCI certificates; :mod:`.oci_auth` — OCI auth, clients, storage options;
* :mod:`.sync` — artifact sync (SYNC_ARTIFACTS) and oracle-ads' sync script;
* :mod:`.profile` — PROFILE / PROFILE_CMD;
* :mod:`.security` — secret values masked in every log line;
* the code's diagnostics: :mod:`.resources` (CPU, memory, GPU figures of the heartbeat),
  :mod:`.stacks` (py-spy / faulthandler stacks, ``fsm-cluster dump`` requests), :mod:`.stall`
  (the stall watchdog) and ``faultsite/`` (the faulthandler fallback's sitecustomize).
"""
