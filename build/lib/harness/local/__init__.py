"""The local backend: a real Ray Serve stack on one machine, one network and PID namespace per node."""
