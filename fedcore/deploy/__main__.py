import sys

from fedcore.deploy.command import main

sys.exit(main())
