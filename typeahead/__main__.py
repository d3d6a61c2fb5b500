from typeahead.cli import main

raise SystemExit(main())
