from mix.cli import main

raise SystemExit(main())
