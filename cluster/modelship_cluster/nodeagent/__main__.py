from modelship_cluster.nodeagent.cli import main

raise SystemExit(main())
