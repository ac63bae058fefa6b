"""What an operator installs; the demo runs as a module from the repository root
(``.venv/bin/python -m deploy.demo``, which ./deploy/demo.sh does).

A regular package rather than a namespace one, so that no ``deploy`` installed elsewhere
on the path can shadow it. Not shipped: setup.py names the packages it installs.
"""
