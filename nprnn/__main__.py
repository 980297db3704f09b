import sys

from nprnn.cli import main

sys.exit(main())
