"""Talking-head engines, one plug-in package each (``gaussiantalker/``, ``synctalk/``, ``demo/``), listed in
``registry.py``; ``base.py`` says what a plug-in is. Platform-side code, except the ``node/`` folders: those
scripts are copied to the GPU nodes and run there."""
