"""Between nodes.

Node names, the cookie, the port mapper (EPMD), the Erlang handshake, frames, connections,
ticks and nodedown, shipping functions and messages to the node that runs them, and the
border with real BEAM nodes (the term format, a BEAM link and the peer that translates).
"""
