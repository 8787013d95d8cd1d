"""Scripts shipped to and run ON the GPU nodes, not in the platform: copied to ``<workdir>/engines/node/``
and run by the node's ``python3`` (inside the engine's container on a docker node). Standard library only,
except ``evaluate.py`` (numpy and OpenCV, which every engine environment has). ``evaluate`` is also
imported by the tests and the benchmark."""
