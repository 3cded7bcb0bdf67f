import sys

from iic.cli import main

sys.exit(main())
