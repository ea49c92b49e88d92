"""marketctl: the one command line for users and operators."""
