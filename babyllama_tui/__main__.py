from babyllama_tui.app import main

raise SystemExit(main())
