from babyllama.cli import main

raise SystemExit(main())
