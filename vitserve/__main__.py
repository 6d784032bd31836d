"""`python -m vitserve` is the `vitserve` command."""

from vitserve.cli import main

raise SystemExit(main())
