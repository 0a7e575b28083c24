"""Packed, compressed and encrypted copies (issue 14): one archive per run.

formats: what an archive is (its name, compression, encryption) and the checks of a
user's choice; pipeline: the byte stages between tar and the destination; members: tar
both ways; check: member-by-member comparison and the records; unpack: a safe restore.
"""
