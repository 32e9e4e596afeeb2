"""The node: its life as a transitions machine declared as data, the parts the provider facade is
assembled from, the one dispatcher for peer events, recovery, the code process, identity and addresses,
and the adaptation for oracle-ads-shaped runners."""
