from enas.cli import main

raise SystemExit(main())
