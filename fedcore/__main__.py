import sys

from fedcore.cli.main import main

sys.exit(main())
