"""``python -m starmd.cli ...``: the ``starmd`` command."""

from starmd.cli import main

main()
