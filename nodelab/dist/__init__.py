"""Between nodes.

Node names, the cookie, the port mapper, the handshake, frames, connections, ticks and
nodedown, and shipping functions and messages to the node that runs them.
"""
