"""The tools around a node.

The ``nodelab`` command, the terminal shell, ``nodelab new`` (like ``mix new``), peer nodes
(like OTP's ``peer``) and the pytest plugin.
"""
