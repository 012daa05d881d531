from oracle_kd.cli import main

raise SystemExit(main())
