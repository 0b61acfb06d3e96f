from service.bench import main

raise SystemExit(main())
