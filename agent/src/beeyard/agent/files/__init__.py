"""The files capability, agent side: where it may reach (``confine``).

The remote operations themselves (list, read, write, transfers) arrive with
issue 4's server side; everything they do goes through ``confine`` first.
"""
