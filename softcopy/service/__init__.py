"""The facility service: runs found under a root, claimed, copied, announced and released."""
