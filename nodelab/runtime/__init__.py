"""A node's inside.

PIDs and references, mailboxes and selective receive, process records, exit signals,
links and monitors, registered names and group leaders: everything that happens within
one node, with no knowledge of sockets or other nodes (the transport is reached through
one typed seam).
"""
