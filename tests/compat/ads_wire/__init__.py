"""Helper files of the wire-compatibility tests (tests/compat/test_wire_ads.py): one template of
an oracle-ads-style provider module and run script (the import lines are the only difference
between its two flavours), the node's work (hello.py) and the oracle-ads wrapper (ads_node.py)."""
