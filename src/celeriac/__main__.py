import sys

from celeriac.cli.main import main

sys.exit(main())
