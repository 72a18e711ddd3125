from listopd.cli import main

raise SystemExit(main())
