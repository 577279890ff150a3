"""`python -m zibrato ...` is the `zibrato` command."""

from .cli import main

main()
