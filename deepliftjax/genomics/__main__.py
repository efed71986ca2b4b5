"""`python -m deepliftjax.genomics`: the same as the `deepliftjax-genomics` command."""

from deepliftjax.genomics._experiment import main

raise SystemExit(main())
