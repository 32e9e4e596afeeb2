"""Launching a cluster: on this machine (``fsm-cluster local``) or on OCI Data Science Jobs (``submit``).

- :mod:`.plan` — flags or a spec → one environment per node (names, ranks, the platform's
  variables), within this machine's node limit; where the work dir, logs and entry script live.
- :mod:`.processes` — one ``fsm-cluster run`` process per node: started in its own session, with
  its log file and the parent-death signal; exits noticed; every descendant swept at the end.
- :mod:`.console` — the nodes' output behind coloured prefixes, the launcher's lines, the live
  state line.
- :mod:`.replace` — the one rule for replacing a lost node at MAIN's word, used by both launchers
  with their own mechanism (a local process, an OCI job run).
- :mod:`.local` — :class:`~.local.LocalCluster`: the local launcher composed of the above.
- :mod:`.oci` — the job and runs of a spec on OCI Data Science, submitted and watched.
"""
